#!/usr/bin/env bash
# scripts/cluster.sh itself: hosts with their own names and addresses, shaped at the rates asked
# for (measured), reshaped while traffic flows; a cut link and its return; two clusters side by
# side; a cluster removed when its owner dies and by `down`, leaving nothing; bad input in one
# line (exit 2); without root, one line and exit 77.
source "$(dirname "$0")/lib.sh"
S=$src/scripts/cluster.sh
cluster_up 2 --gbps 0.1 --gbps-host 1=0.02
name=$(cl host 0 | sed 's/-h0$//')
[ "$(cl run -- hostname)" = "$name-h0" ] && [ "$(cl run --host 1 -- hostname)" = "$name-h1" ] ||
  fail "hostnames"
[ "$(hostname)" != "$name-h0" ] || fail "the machine's own hostname changed"
grep -qx "$name-h0 slots=1" cluster/hostfile && grep -qx "$name-h1 slots=1" cluster/hostfile ||
  fail "hostfile: $(cat cluster/hostfile)"
[ "$(cl mpirun -- -np 2 hostname | sort | paste -sd' ')" = "$name-h0 $name-h1" ] ||
  fail "mpirun does not reach both hosts"
ip1=$(cl run --host 1 -- ip -4 -o addr show eth0 | awk '{print $4}' | cut -d/ -f1)
# rate FROM TO SECONDS: MB/s from host FROM to host TO, measured with a TCP stream.
rate() {
  cl run --host "$2" -- /usr/bin/python3 - server > rate.txt <<'PY' &
import socket, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 5999)); s.listen(1); s.settimeout(20)
c, _ = s.accept(); n, t0 = 0, None
while True:
    b = c.recv(1 << 20)
    if not b: break
    t0 = t0 or time.time(); n += len(b)
print(f"{n / (time.time() - t0) / 1e6:.3f}")
PY
  local server=$!
  sleep 0.5
  local to; to=$(cl run --host "$2" -- ip -4 -o addr show eth0 | awk '{print $4}' | cut -d/ -f1)
  cl run --host "$1" -- /usr/bin/python3 -c "
import socket, time
c = socket.create_connection(('$to', 5999), timeout=10); b = b'x' * 65536; t = time.time()
while time.time() - t < $3: c.sendall(b)
c.close()"
  wait $server
  cat rate.txt
}
within() { /usr/bin/python3 -c "import sys; v=float('$1'); sys.exit(0 if $2 <= v <= $3 else 1)"; }
r01=$(rate 0 1 3); within "$r01" 10 13.5 || fail "host 0 at 0.1 Gbit/s sent $r01 MB/s"
r10=$(rate 1 0 3); within "$r10" 2 2.8 || fail "host 1 at 0.02 Gbit/s sent $r10 MB/s"
cl shape 1 0.05
r10b=$(rate 1 0 3); within "$r10b" 5 6.6 || fail "host 1 reshaped to 0.05 Gbit/s sent $r10b MB/s"
cl shape 0 off
r01b=$(rate 0 1 2); within "$r01b" 40 100000 || fail "host 0 unshaped sent $r01b MB/s"
echo "rates: 0->1 $r01 MB/s (0.1 Gbit/s), 1->0 $r10 (0.02), reshaped $r10b (0.05), unshaped $r01b"
cl run --host 1 -- /usr/bin/python3 -c "
import socket; s = socket.socket(); s.bind(('0.0.0.0', 5998)); s.listen(4); s.settimeout(15)
for _ in range(2): s.accept()[0].close()" &
listener=$!
sleep 0.5
connect() { cl run -- /usr/bin/python3 -c "import socket; socket.create_connection(('$ip1', 5998), timeout=$1)"; }
connect 5 || fail "host 1 unreachable"
cl link 1 down
! connect 2 2> /dev/null || fail "host 1 reachable with its link down"
cl link 1 up
sleep 1
connect 5 || fail "host 1 unreachable after its link came back"
wait $listener
# A second cluster beside the first, owned by a process that then dies.
sleep 300 &
owner=$!
bash "$S" up 3 --dir second --owner $owner > second.txt
other=$(bash "$S" host 0 --dir second | sed 's/-h0$//')
[ "$other" != "$name" ] || fail "two clusters with one name"
[ "$(ip netns list | grep -c "^$other-")" -eq 4 ] || fail "second cluster: $(ip netns list)"
kill $owner
for _ in $(seq 50); do [ -d second ] || break; sleep 0.1; done
[ ! -d second ] && ! ip netns list | grep -q "^$other-" && ! grep -q "$work/second" /proc/mounts ||
  fail "the second cluster outlived its owner"
[ "$(cl run -- hostname)" = "$name-h0" ] || fail "the first cluster went with the second"
# Bad input: one line, exit 2, nothing made.
bad() {
  set +e; bash "$S" "$@" > /dev/null 2> err.txt; local rc=$?; set -e
  [ $rc -eq 2 ] && [ "$(wc -l < err.txt)" -eq 1 ] || fail "cluster.sh $*: exit $rc: $(cat err.txt)"
}
bad up 0 --dir x; bad up 2 --gbps fast --dir x; bad up 2 --gbps-host 5=1 --dir x; bad up 2 --dir cluster
bad shape 7 1 --dir cluster; bad shape 1 -3 --dir cluster; bad link 1 sideways --dir cluster
bad run --dir nowhere -- true; bad frobnicate
[ ! -e x ] || fail "a refused up left x"
# Without root: one line, exit 77.
copy=/tmp/cl-nobody-$$.sh  # a copy nobody can read, wherever the checkout lies
cp "$S" "$copy" && chmod 755 "$copy"
set +e; setpriv --reuid=65534 --regid=65534 --clear-groups bash "$copy" up 2 --dir /tmp/cl-nobody-$$ \
  > /dev/null 2> err.txt; rc=$?; set -e
rm -f "$copy"
[ $rc -eq 77 ] && [ "$(wc -l < err.txt)" -eq 1 ] && grep -q "not root" err.txt ||
  fail "as non-root: exit $rc: $(cat err.txt)"
# down leaves nothing.
cl down
! ip netns list | grep -q "^$name-" && [ ! -d cluster ] && ! grep -q "$work/cluster" /proc/mounts ||
  fail "down left something"
echo "cluster.sh: hosts, rates, links, owners and errors as documented"
