#!/usr/bin/env python3
"""Instructions per request, deterministic: one harness scenario's proxy (pingress or the
Pingora floor) under `valgrind --tool=callgrind`, instrumented only while a fixed wrk load
runs (after an uninstrumented warm-up), so start-up and translation are not counted.
Callgrind counts instructions, not time: the same binary and load give the same figure on a
loaded or a quiet machine, which is what an A/B of a small hot-path change needs on this VM.

Run: python3 benches/load/callgrind.py BIN SCENARIO {pingress|floor} [SECONDS]
  e.g. python3 benches/load/callgrind.py target/release/pingress h1-small floor 10
Prints "<proxy> <scenario>: <requests> requests, <Ir> Ir, <Ir/request> Ir/request" and leaves
the profile in /tmp/pingress-callgrind/<proxy>-<scenario>/cg.out.* for callgrind_annotate.
Scenarios: those of harness.py that wrk runs over HTTP/1.1, plain or TLS (h1-*, tls-small,
tls-newconn, hosts-*, annotations-1000).
"""

import glob
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import harness as H  # noqa: E402


def main():
    if len(sys.argv) < 4 or sys.argv[3] not in ("pingress", "floor"):
        sys.exit(__doc__)
    binary, scen, which = os.path.abspath(sys.argv[1]), sys.argv[2], sys.argv[3]
    seconds = sys.argv[4] if len(sys.argv) > 4 else "10"
    d = Path(f"/tmp/pingress-callgrind/{which}-{scen}")
    d.mkdir(parents=True, exist_ok=True)
    crt, key = H.write_certs(d)
    be = H.free_port()
    echo = subprocess.Popen([binary, "echo", "--listen", f"127.0.0.1:{be}", "--name", "be-0"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    H.wait_port(be)
    routes = H.routes_for(scen)
    http, https, admin = H.free_port(), H.free_port(), H.free_port()
    out = d / "cg.out"
    for f in glob.glob(f"{out}*"):
        os.unlink(f)
    vg = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}"]
    if which == "pingress":
        m = H.pingress_manifests(d, routes, [be], crt, key, scen)
        conf = H.pingress_conf(d, http, https, admin, m, None, scen)
        # The manifests do not change: no directory polls among the counted instructions
        # (the harness's 50 ms poll is ~20 instructions per request at its request rates, but
        # hundreds at callgrind's).
        conf.write_text(conf.read_text().replace("poll_interval_ms: 50", "poll_interval_ms: 600000"))
        cmd = vg + [binary, "-c", str(conf)]
    else:
        conf = H.pingress_conf(d, http, https, H.free_port(), d)
        cmd = vg + [binary, "-c", str(conf), "floor", "--backend", f"127.0.0.1:{be}",
                    "--cert", str(crt), "--key", str(key)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(d / "valgrind.log", "w"))
    try:
        H.wait_port(http, 300)
        end = time.time() + 300
        while which == "pingress" and time.time() < end:
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{admin}/readyz", timeout=5).status == 200:
                    break
            except OSError:
                time.sleep(0.2)
        lua = H.wrk_script(d, scen, routes, False)
        # The scenario's protocol: plain HTTP/1.1, or HTTP/1.1 over TLS (tls-*).
        proto = H.SCENARIOS[scen][1]
        url = f"{proto}://127.0.0.1:{https if proto == 'https' else http}/"
        subprocess.run(["wrk", "-t1", "-c10", "-d3s", "-s", str(lua), url], capture_output=True)
        subprocess.run(["callgrind_control", "-i", "on", str(proc.pid)], capture_output=True)
        r = subprocess.run(["wrk", "-t1", "-c10", f"-d{seconds}s", "-s", str(lua), url],
                           capture_output=True, text=True)
        # Dump (and zero) the counters of the load alone, then stop counting.
        subprocess.run(["callgrind_control", "-d", str(proc.pid)], capture_output=True)
        subprocess.run(["callgrind_control", "-i", "off", str(proc.pid)], capture_output=True)
    finally:
        proc.terminate()
        proc.wait(60)
        echo.terminate()
    requests = int(re.search(r"(\d+) requests in", r.stdout).group(1))
    ir = 0
    for f in glob.glob(f"{out}*"):
        # `totals:` (the final dump's `summary:` can be garbage after a zeroing dump).
        ir += sum(int(line.split()[1]) for line in open(f) if line.startswith("totals:"))
    print(f"{which} {scen}: {requests} requests, {ir} Ir, {ir / max(requests, 1):.0f} Ir/request")


if __name__ == "__main__":
    main()
