#!/usr/bin/env bash
# A cluster on one machine: N hosts as network namespaces, each with its own hostname (a UTS
# namespace), one address on a bridge of their own, and its egress shaped by `tc tbf`; `mpirun`
# starts ranks inside them through an rsh agent that enters a host's namespaces. See
# docs/cluster.md.
#
#   cluster.sh up N [--gbps R] [--gbps-host H=R ...] [--slots S] [--dir DIR] [--owner PID|--keep]
#   cluster.sh run [--dir DIR] [--host H] -- CMD...   a command on host H (0), e.g. mpirun
#   cluster.sh mpirun [--dir DIR] -- ARGS...          mpirun across the hosts, from host 0
#   cluster.sh shape [--dir DIR] H R|off               host H's egress to R Gbit/s (or unshaped)
#   cluster.sh link [--dir DIR] H down|up              cut or restore host H's link
#   cluster.sh host [--dir DIR] H                      host H's hostname
#   cluster.sh kill [--dir DIR] H [SIGNAL]             signal (KILL) every process of host H, those
#                                                      with no child first (the ranks, then a
#                                                      second later their daemon, which reports
#                                                      their deaths to mpirun)
#   cluster.sh down [--dir DIR]                        remove everything `up` made
#
# DIR (default $PARALLAMA_CLUSTER, else ./cluster) holds the cluster's state: its hostfile, the
# rsh agent, the mpirun arguments. Every name is unique per `up`, so clusters never collide. `up`
# ties the cluster's life to a process (--owner, default the caller): when it ends, for any
# reason, a watcher removes the cluster; --keep leaves it until `down`. Without root or network
# namespaces: one line on stderr, exit 77.
set -euo pipefail
self=$(readlink -f "$0")
die() { echo "cluster.sh: $*" >&2; exit 2; }
unavailable() { echo "cluster.sh: $* (needs root and network namespaces); skipped" >&2; exit 77; }

cmd=${1:-}
[ -n "$cmd" ] || die "usage: cluster.sh up|run|mpirun|shape|link|kill|host|down ... (see the script's header)"
shift
dir=${PARALLAMA_CLUSTER:-$PWD/cluster}
n=0 gbps="" slots=1 owner=$PPID keep=0 host=0
declare -a host_rates=() rest=()
while [ $# -gt 0 ]; do
  case $1 in
    --dir) dir=$2; shift 2 ;;
    --gbps) gbps=$2; shift 2 ;;
    --gbps-host) host_rates+=("$2"); shift 2 ;;
    --slots) slots=$2; shift 2 ;;
    --owner) owner=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    --host) host=$2; shift 2 ;;
    --) shift; rest+=("$@"); break ;;
    *) rest+=("$1"); shift ;;
  esac
done
dir=$(readlink -m "$dir")

is_rate() { [[ $1 =~ ^([0-9]+\.?[0-9]*|\.[0-9]+)$ ]] && awk -v r="$1" 'BEGIN { exit !(r > 0 && r <= 400) }'; }
state() { cat "$dir/$1" 2> /dev/null || die "no cluster in $dir (run: cluster.sh up N --dir $dir)"; }
host_index() {  # host_index H: H checked against the cluster's size
  local count; count=$(state size)
  [[ $1 =~ ^[0-9]+$ ]] && [ "$1" -lt "$count" ] || die "host $1: the cluster has hosts 0..$((count - 1))"
}
# ns_exec H CMD...: CMD inside host H's network and UTS namespaces.
ns_exec() {
  local name; name=$(state name)
  nsenter --net="/run/netns/$name-h$1" --uts="$dir/uts/h$1" -- "${@:2}"
}
br_exec() { ip netns exec "$(state name)-br" "$@"; }

# shape_host H R|off: replaces the root qdisc of host H's interface (tbf at R Gbit/s).
shape_host() {
  if [ "$2" = off ]; then
    ns_exec "$1" tc qdisc del dev eth0 root 2> /dev/null || true
    return
  fi
  is_rate "$2" || die "rate $2: give Gbit/s as a number in (0, 400], or off"
  # The bucket holds 10 ms at the rate (at least 64 KiB: a full-size segment), the queue 50 ms.
  local burst; burst=$(awk -v r="$2" 'BEGIN { b = r * 1e9 / 8 * 0.01; if (b < 65536) b = 65536; printf "%d", b }')
  ns_exec "$1" tc qdisc replace dev eth0 root tbf rate "${2}gbit" burst "$burst" latency 50ms
}

down() {
  [ -f "$dir/name" ] || return 0
  local name; name=$(cat "$dir/name")
  # The watcher, unless this is it (its shell runs `down` in its own process).
  local w; w=$(cat "$dir/watcher.pid" 2> /dev/null || true)
  [ -z "$w" ] || [ "$w" = $$ ] || kill "$w" 2> /dev/null || true
  for f in "$dir"/uts/h*; do
    [ -e "$f" ] || continue
    umount "$f" 2> /dev/null || true
  done
  for ns in $(ip netns list | awk '{print $1}' | grep -x "$name-\(h[0-9]*\|br\)" || true); do
    # Whatever still runs inside (ranks of a job that was cut off) goes with it.
    for p in $(ip netns pids "$ns" 2> /dev/null); do kill -9 "$p" 2> /dev/null || true; done
    ip netns del "$ns" 2> /dev/null || true
  done
  rm -rf "$dir"
}

up() {
  [[ $n =~ ^[0-9]+$ ]] && [ "$n" -ge 1 ] && [ "$n" -le 64 ] || die "up N: N hosts, 1 to 64"
  [ -z "$gbps" ] || is_rate "$gbps" || die "--gbps $gbps: a number of Gbit/s in (0, 400]"
  [[ $slots =~ ^[0-9]+$ ]] && [ "$slots" -ge 1 ] || die "--slots $slots: a positive number"
  local spec h r
  for spec in "${host_rates[@]}"; do
    h=${spec%%=*} r=${spec#*=}
    [[ $h =~ ^[0-9]+$ ]] && [ "$h" -lt "$n" ] || die "--gbps-host $spec: host must be 0..$((n - 1))"
    is_rate "$r" || die "--gbps-host $spec: a number of Gbit/s in (0, 400]"
  done
  [ ! -e "$dir" ] || die "$dir exists: another cluster's state, or a file of yours (cluster.sh down --dir $dir, or another --dir)"
  [ "$(id -u)" -eq 0 ] || unavailable "not root"
  command -v nsenter > /dev/null && command -v tc > /dev/null || unavailable "nsenter or tc missing"
  unshare --net --uts true 2> /dev/null || unavailable "cannot create network and UTS namespaces"
  mkdir -p "$dir/uts"
  # A short unique name: interface and namespace names are limited to 15 characters.
  local name; name=pl$(printf '%x' $(( ($$ << 12) ^ RANDOM ^ ($(date +%s%N) & 0xfff) )) | tail -c 9)
  echo "$name" > "$dir/name"
  echo "$n" > "$dir/size"
  trap 'down; exit 2' ERR INT TERM
  ip netns add "$name-br"
  br_exec ip link add br0 type bridge
  br_exec ip link set br0 up
  br_exec ip link set lo up
  local subnet=10.231.$(( RANDOM % 250 )).0/24
  echo "$subnet" > "$dir/subnet"
  : > "$dir/hostfile"
  for ((h = 0; h < n; h++)); do
    ip netns add "$name-h$h"
    ip link add "$name-v$h" netns "$name-br" type veth peer name eth0 netns "$name-h$h"
    br_exec ip link set "$name-v$h" master br0 up
    touch "$dir/uts/h$h"
    unshare --uts="$dir/uts/h$h" hostname "$name-h$h"
    ns_exec "$h" ip link set lo up
    ns_exec "$h" ip addr add "${subnet%.0/24}.$((h + 1))/24" dev eth0
    ns_exec "$h" ip link set eth0 up
    # A peer that stops answering fails a connection with data in flight after ~13 s (5 retries)
    # instead of ~15 minutes, so that mpirun ends once a host is cut off (docs/cluster.md).
    ns_exec "$h" sh -c 'echo 5 > /proc/sys/net/ipv4/tcp_retries2'
    r=$gbps
    for spec in "${host_rates[@]}"; do [ "${spec%%=*}" != "$h" ] || r=${spec#*=}; done
    [ -z "$r" ] || shape_host "$h" "$r"
    echo "$name-h$h slots=$slots" >> "$dir/hostfile"
  done
  # The rsh agent mpirun uses: "agent HOST CMD..." runs CMD inside HOST's namespaces.
  cat > "$dir/agent" <<EOF
#!/bin/sh
# rsh agent of the cluster $name: runs a command inside a host's namespaces.
host=\$1; shift
case \$host in $name-h*) ;; *) echo "agent: \$host is not a host of cluster $name" >&2; exit 1 ;; esac
exec nsenter --net=/run/netns/\$host --uts=$dir/uts/\${host#$name-} -- sh -c "\$*"
EOF
  chmod +x "$dir/agent"
  # --bind-to none: every host's daemon would bind its first rank to core 0, and the hosts
  # share this machine's cores.
  printf '%s\n' mpirun --hostfile "$dir/hostfile" --mca plm_rsh_agent "$dir/agent" --bind-to none \
    --mca btl self,vader,tcp --mca btl_tcp_if_include "$subnet" \
    --mca oob_tcp_if_include "$subnet" --mca oob_tcp_keepalive_time 10 \
    --mca oob_tcp_keepalive_intvl 2 --mca oob_tcp_keepalive_probes 3 > "$dir/mpirun.args"
  trap - ERR INT TERM
  if [ "$keep" -eq 0 ]; then  # the watcher: the cluster goes when its owner does
    setsid bash -c 'while kill -0 "$1" 2> /dev/null && [ -d "$2" ]; do sleep 1; done
                    bash "$3" down --dir "$2"' watcher "$owner" "$dir" "$self" \
      < /dev/null > /dev/null 2>&1 &
    echo $! > "$dir/watcher.pid"
  fi
  echo "cluster $name: $n hosts ($(cut -d' ' -f1 "$dir/hostfile" | paste -sd' ')), subnet $subnet," \
    "egress ${gbps:-unshaped}${gbps:+ Gbit/s}${host_rates[*]:+ (${host_rates[*]})}; state in $dir"
  echo "run across it: $self mpirun --dir $dir -- -np $((n * slots)) CMD..."
  echo "which runs, on host 0: $self run --dir $dir -- $(paste -sd' ' "$dir/mpirun.args") -np $((n * slots)) CMD..."
}

case $cmd in
  up)
    [ ${#rest[@]} -eq 1 ] || die "usage: cluster.sh up N [--gbps R] [--gbps-host H=R ...] [--slots S] [--dir DIR]"
    n=${rest[0]}
    up ;;
  run)
    [ ${#rest[@]} -ge 1 ] || die "usage: cluster.sh run [--host H] -- CMD..."
    host_index "$host"
    ns_exec "$host" "${rest[@]}" ;;
  mpirun)
    mapfile -t margs < <(state mpirun.args)
    ns_exec 0 "${margs[@]}" "${rest[@]}" ;;
  shape)
    [ ${#rest[@]} -eq 2 ] || die "usage: cluster.sh shape H R|off"
    host_index "${rest[0]}"
    shape_host "${rest[0]}" "${rest[1]}" ;;
  link)
    [ ${#rest[@]} -eq 2 ] || die "usage: cluster.sh link H down|up"
    host_index "${rest[0]}"
    [[ ${rest[1]} =~ ^(down|up)$ ]] || die "link ${rest[1]}: down or up"
    br_exec ip link set "$(state name)-v${rest[0]}" "${rest[1]}" ;;
  kill)
    [ ${#rest[@]} -ge 1 ] && [ ${#rest[@]} -le 2 ] || die "usage: cluster.sh kill H [SIGNAL]"
    host_index "${rest[0]}"
    pids=$(ip netns pids "$(state name)-h${rest[0]}")
    parents=$(for p in $pids; do ps -o ppid= -p "$p" 2> /dev/null; done | tr -d ' ')
    leaves=$(for p in $pids; do grep -qx "$p" <<< "$parents" || echo "$p"; done)
    for p in $leaves; do kill -s "${rest[1]:-KILL}" "$p" 2> /dev/null || true; done
    [ -z "$leaves" ] || sleep 1
    for p in $(ip netns pids "$(state name)-h${rest[0]}"); do
      kill -s "${rest[1]:-KILL}" "$p" 2> /dev/null || true
    done ;;
  host)
    [ ${#rest[@]} -eq 1 ] || die "usage: cluster.sh host H"
    host_index "${rest[0]}"
    echo "$(state name)-h${rest[0]}" ;;
  down) down ;;
  *) die "unknown command $cmd: up, run, mpirun, shape, link, kill, host or down" ;;
esac
