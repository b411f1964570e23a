#!/usr/bin/env python3
"""Opens a run report in headless Chromium, driven over the DevTools protocol on a pipe (no
network port), at each window size asked for (WIDTHxHEIGHT; below 600 px wide as a phone):
prints what the page's script says (body data-charts "DRAWN/TOTAL", data-errors), the page's
width, every console message, script exception and request that is not file:, and saves a PNG
screenshot. Exits 1 when a chart was not drawn, the script or console reported an error, the
page asked for anything over the network (blocked, and sent to a closed local port), it is wider than the window, or a screenshot is blank.

usage: browser.py REPORT.html OUT_PREFIX WxH [WxH ...]   (writes OUT_PREFIX-WxH.png)
"""
import base64
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zlib


class Browser:
    def __init__(self):
        exe = shutil.which("chromium") or shutil.which("chromium-browser")
        if not exe:
            raise SystemExit("no chromium on PATH (scripts/install-deps.sh installs it)")
        self.profile = tempfile.mkdtemp(prefix="report-browser-")
        to_child, self.w = os.pipe()
        self.r, from_child = os.pipe()

        def fds():  # the protocol's pipe: commands on fd 3, answers on fd 4
            os.dup2(to_child, 3)
            os.dup2(from_child, 4)

        self.proc = subprocess.Popen(
            [exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--hide-scrollbars", "--remote-debugging-pipe",
             # nothing leaves this machine: any request goes to a closed local port
             "--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=<-loopback>",
             "--user-data-dir=" + self.profile, "about:blank"],
            preexec_fn=fds, pass_fds=(3, 4, to_child, from_child), stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        os.close(to_child)
        os.close(from_child)
        self.buf = b""
        self.next_id = 0
        self.events = []

    def read(self, deadline):
        while b"\0" not in self.buf:
            if time.time() > deadline:
                raise SystemExit("chromium did not answer in time")
            chunk = os.read(self.r, 1 << 20)
            if not chunk:
                raise SystemExit("chromium ended")
            self.buf += chunk
        msg, self.buf = self.buf.split(b"\0", 1)
        return json.loads(msg)

    def send(self, method, session=None, timeout=30, **params):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params}
        if session:
            msg["sessionId"] = session
        os.write(self.w, json.dumps(msg).encode() + b"\0")
        deadline = time.time() + timeout
        while True:
            m = self.read(deadline)
            if m.get("id") == self.next_id:
                if "error" in m:
                    raise SystemExit(f"{method}: {m['error']}")
                return m.get("result", {})
            self.events.append(m)

    def wait_for(self, method, timeout=30):
        deadline = time.time() + timeout
        while True:
            for i, m in enumerate(self.events):
                if m.get("method") == method:
                    return self.events.pop(i)
            self.events.append(self.read(deadline))

    def close(self):
        try:
            self.send("Browser.close", timeout=5)
        except SystemExit:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.profile, ignore_errors=True)


def png_pixels(data):
    """(width, height, rows of RGB(A) bytes) of an 8-bit, non-interlaced PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, w = 8, b"", 0
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            w, h, depth, color = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and color in (2, 6), (depth, color)
            bpp = 3 if color == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    raw, stride, rows, prev = zlib.decompress(idat), w * bpp, [], bytearray(w * bpp)
    for y in range(h):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        prev = line
    return w, h, bpp, rows


def not_blank(png):
    w, h, bpp, rows = png_pixels(png)
    colors, inked = set(), 0
    for row in rows[::4]:
        for x in range(0, w * bpp, 4 * bpp):
            px = row[x:x + 3]
            colors.add(px)
            inked += sum(px) < 600  # darker than the page's light backgrounds
    sampled = len(rows[::4]) * len(range(0, w * bpp, 4 * bpp))
    return len(colors), inked / sampled


def main():
    report, prefix, sizes = os.path.abspath(sys.argv[1]), sys.argv[2], sys.argv[3:]
    b = Browser()
    failures = []
    try:
        target = b.send("Target.createTarget", url="about:blank")["targetId"]
        s = b.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for m in ("Page.enable", "Runtime.enable", "Log.enable", "Network.enable"):
            b.send(m, s)
        b.send("Network.setBlockedURLs", s, urls=["http://*", "https://*", "ws://*", "wss://*"])
        for size in sizes:
            width, height = (int(v) for v in size.split("x"))
            b.send("Emulation.setDeviceMetricsOverride", s, width=width, height=height,
                   deviceScaleFactor=1, mobile=width < 600)
            b.events.clear()
            b.send("Page.navigate", s, url="file://" + report)
            b.wait_for("Page.loadEventFired")
            time.sleep(0.3)  # the resize handler's redraw, where there is one
            state = b.send("Runtime.evaluate", s, returnByValue=True, expression=(
                "JSON.stringify({charts: document.body.dataset.charts, "
                "errors: document.body.dataset.errors, "
                "figures: document.querySelectorAll('figure.chart').length, "
                "svgs: document.querySelectorAll('figure.chart .plot svg').length, "
                "width: document.documentElement.scrollWidth})"))["result"]["value"]
            state = json.loads(state)
            shot = base64.b64decode(b.send("Page.captureScreenshot", s, format="png")["data"])
            with open(f"{prefix}-{size}.png", "wb") as f:
                f.write(shot)
            colors, inked = not_blank(shot)
            print(f"{size}: charts {state['charts']}, script errors {state['errors']}, page "
                  f"width {state['width']} px, {colors} colours sampled, {inked:.1%} inked")
            for m in b.events:
                p = m.get("params", {})
                if m.get("method") == "Runtime.exceptionThrown":
                    failures.append(f"{size}: exception: {p['exceptionDetails'].get('text')}")
                elif m.get("method") == "Runtime.consoleAPICalled" and p.get("type") in ("error", "warning"):
                    failures.append(f"{size}: console {p['type']}: {p.get('args')}")
                elif m.get("method") == "Log.entryAdded" and p["entry"]["level"] == "error":
                    failures.append(f"{size}: log: {p['entry'].get('text')}")
                elif m.get("method") == "Network.requestWillBeSent":
                    url = p["request"]["url"]
                    if not url.startswith(("file:", "data:", "about:")):
                        failures.append(f"{size}: asked the network for {url}")
            drawn, total = (state["charts"] or "0/-1").split("/")
            if drawn != total or int(total) != state["figures"] or state["svgs"] != state["figures"]:
                failures.append(f"{size}: charts drawn {state['charts']} of {state['figures']}")
            if state["errors"] != "0":
                failures.append(f"{size}: the page's script reported {state['errors']} error(s)")
            if state["width"] > width:
                failures.append(f"{size}: the page is {state['width']} px wide in a {width} px window")
            if colors < 8 or inked < 0.005:
                failures.append(f"{size}: the screenshot looks blank")
    finally:
        b.close()
    for f in failures:
        print("FAIL", f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
