#!/usr/bin/env python3
"""Instructions per request, nearly deterministic: one harness scenario's proxy (pingress or the
Pingora floor) under `valgrind --tool=callgrind`, instrumented only while a fixed wrk load
runs (after an uninstrumented warm-up), so start-up and translation are not counted.
Callgrind counts instructions, not time: the same binary and load give nearly the same figure
on a loaded or a quiet machine (within about 1 %: how requests batch per read and wake-up
still follows timing), which is what an A/B of a small hot-path change needs on this VM.

Run: python3 benches/load/callgrind.py BIN SCENARIO {pingress|floor} [SECONDS] [--cache-sim | --syscalls]
  e.g. python3 benches/load/callgrind.py target/release/pingress h1-small floor 10
Counts two loads, SECONDS/2 then SECONDS, each on 10 new connections. Prints
"<proxy> <scenario>: <requests> requests, <Ir> Ir, <Ir/request> Ir/request" of the second, and
the marginal cost: the difference of the two over the difference of their request counts,
which leaves out connection set-up (TLS handshakes), as a long run does. Leaves the profiles
in /tmp/pingress-callgrind/<proxy>-<scenario>/cg.out.1 (short) and cg.out.2 (full load) for
callgrind_annotate.
With --cache-sim, callgrind also simulates the caches (`--cache-sim=yes`: first-level
instruction and data caches and the last level, sized as this machine's) and prints each
event per request: I1mr/D1mr/D1mw first-level misses (instruction fetch, data read, data
write), ILmr/DLmr/DLmw last-level ones, and callgrind's cycle estimate (Ir + 10 x first-level
misses + 100 x last-level misses), which charges the cache footprint that Ir leaves out.
About twice as slow to run. Callgrind models two levels only, and the last one is this
machine's 32 MiB L3, which holds a proxy's whole working set: to see the second-level misses
that real requests pay (~40 cycles each to L3), model the 512 KiB L2 as the last level with
  CALLGRIND_ARGS="--LL=524288,8,64" python3 benches/load/callgrind.py ... --cache-sim
(CALLGRIND_ARGS: more valgrind options, with --cache-sim only).
With --syscalls, the proxy runs natively instead (no valgrind) and each load is counted by
`perf stat` on the kernel's tracepoints, which work without hardware counters: system calls
by name, context switches and page faults, per request and marginal as above. Callgrind sees
only user-space instructions; this shows the kernel work a request causes.
Scenarios: those of harness.py that wrk runs over HTTP/1.1, plain or TLS (h1-*, tls-small,
tls-newconn, hosts-*, annotations-1000), and h2-tls (h2load, 400 x SECONDS requests).
"""

import glob
import os
import re
import signal
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
    cache_sim = "--cache-sim" in sys.argv
    syscalls = "--syscalls" in sys.argv
    args = [a for a in sys.argv[1:] if a not in ("--cache-sim", "--syscalls")]
    binary, scen, which = os.path.abspath(args[0]), args[1], args[2]
    seconds = args[3] if len(args) > 3 else "10"
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
    if cache_sim:
        vg.append("--cache-sim=yes")
        vg += os.environ.get("CALLGRIND_ARGS", "").split()
    if syscalls:
        vg = []
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
        # The scenario's protocol: plain HTTP/1.1, HTTP/1.1 over TLS (tls-*), or HTTP/2 over
        # TLS (h2-tls: h2load, 10 connections x 10 streams as in the harness).
        _, proto, path, mode, _ = H.SCENARIOS[scen]
        if mode == "h2":
            url = f"https://127.0.0.1:{https}{path}"

            # A fixed count (400 a second of SECONDS), not a duration: the 10 connections'
            # TLS handshakes are in the count (~3,000 instructions a request at 4,000), so
            # two runs compare only when they share them over the same number of requests.
            def load(secs):
                return ["h2load", "-c", "10", "-m", "10", "-n", str(400 * int(secs)), "-H",
                        f":authority: {H.HOST}", url]
        else:
            # The scenario's target (its response size) and its connection mode (`close`:
            # a new connection, and over TLS a full handshake, per request).
            lua = H.wrk_script(d, scen, routes, mode == "close")
            url = f"{proto}://127.0.0.1:{https if proto == 'https' else http}{path}"

            def load(secs):
                return ["wrk", "-t1", "-c10", f"-d{secs}s", "-s", str(lua), url]
        subprocess.run(load(3), capture_output=True)
        if syscalls:
            (short, t1), (r, t2) = (kernel_counts(proc.pid, load(secs))
                                    for secs in (max(1, int(seconds) // 2), seconds))
            report_kernel(which, scen, requests_of(short.stdout), t1, requests_of(r.stdout), t2)
            return
        subprocess.run(["callgrind_control", "-i", "on", str(proc.pid)], capture_output=True)
        # Two counted loads, each dumped (and zeroed) after it: a short one, then the full
        # one. Each opens its 10 connections anew, so their difference is the cost of the
        # extra requests alone, without connection set-up (TLS handshakes).
        short = subprocess.run(load(max(1, int(seconds) // 2)), capture_output=True, text=True)
        subprocess.run(["callgrind_control", "-d", str(proc.pid)], capture_output=True)
        r = subprocess.run(load(seconds), capture_output=True, text=True)
        subprocess.run(["callgrind_control", "-d", str(proc.pid)], capture_output=True)
        subprocess.run(["callgrind_control", "-i", "off", str(proc.pid)], capture_output=True)
    finally:
        proc.terminate()
        proc.wait(60)
        echo.terminate()
    n1, n2 = requests_of(short.stdout), requests_of(r.stdout)
    t1, t2 = totals_of(Path(f"{out}.1")), totals_of(Path(f"{out}.2"))
    ir, per = t2.get("Ir", 0), max(n2, 1)
    print(f"{which} {scen}: {n2} requests, {ir} Ir, {ir / per:.0f} Ir/request")
    if n2 > n1:
        fixed = ir - n2 * (ir - t1.get("Ir", 0)) / (n2 - n1)
        print(f"  marginal: {(ir - t1.get('Ir', 0)) / (n2 - n1):.0f} Ir/request "
              f"(runs of {n1} and {n2} requests; set-up {fixed / 1e6:.1f} M Ir a run)")
    if cache_sim:
        print("  per request: " + ", ".join(f"{k} {v / per:.1f}" for k, v in t2.items() if k != "Ir"))
        # Callgrind's own cycle estimate (callgrind_annotate's CEst): an instruction costs 1,
        # a first-level miss 10 more, a last-level miss 100 more. Still deterministic, and
        # unlike Ir it charges the cache footprint, which wall clock pays.
        l1 = sum(t2.get(k, 0) for k in ("I1mr", "D1mr", "D1mw"))
        ll = sum(t2.get(k, 0) for k in ("ILmr", "DLmr", "DLmw"))
        print(f"  cycle estimate: {(ir + 10 * l1 + 100 * ll) / per:.0f} a request "
              f"(Ir + 10 x first-level misses + 100 x last-level misses)")


# Counted for --syscalls: every system call by name, and the scheduler's and the memory
# manager's work for the proxy.
KERNEL_EVENTS = ["syscalls:sys_enter_*", "raw_syscalls:sys_enter", "context-switches", "page-faults"]


def kernel_counts(pid, load):
    """Runs `load` while `perf stat` counts KERNEL_EVENTS in every thread of `pid`; returns the
    load's result and the counts by event."""
    def more_files():
        # One descriptor per event and thread: ~360 system calls times the worker threads.
        import resource
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    out = f"/tmp/pingress-callgrind/perf-stat-{pid}.csv"
    perf = subprocess.Popen(["perf", "stat", "-x,", "-o", out, "-p", str(pid)]
                            + [a for e in KERNEL_EVENTS for a in ("-e", e)],
                            preexec_fn=more_files, stderr=subprocess.PIPE, text=True)
    time.sleep(1)  # perf attaches to each thread before the load starts
    r = subprocess.run(load, capture_output=True, text=True)
    perf.send_signal(signal.SIGINT)
    _, err = perf.communicate(timeout=60)
    counts = {}
    for line in open(out):
        f = line.strip().split(",")
        if len(f) > 2 and f[0].isdigit():
            name = f[2].removeprefix("syscalls:sys_enter_")
            counts[name] = counts.get(name, 0) + int(f[0])
    if not counts:
        sys.exit(f"perf stat counted nothing: {err}")
    return r, counts


def report_kernel(which, scen, n1, t1, n2, t2):
    """Per request in the full load, and marginal (the difference of the two loads over the
    difference of their request counts), for every event that moved."""
    print(f"{which} {scen}: {n2} requests (short load {n1})")
    print(f"  {'event':24} {'per request':>12} {'marginal':>10}")
    for name in sorted(t2, key=lambda k: (k != "raw_syscalls:sys_enter", -t2[k])):
        if t2[name] == 0:
            continue
        marginal = (t2[name] - t1.get(name, 0)) / (n2 - n1) if n2 > n1 else float("nan")
        print(f"  {name:24} {t2[name] / max(n2, 1):12.3f} {marginal:10.3f}")


def requests_of(out):
    """Requests a wrk or h2load run completed, from its report."""
    done = re.search(r"(\d+) requests in", out) or re.search(r"\d+ started, (\d+) done", out)
    return int(done.group(1))


def totals_of(path):
    """The event totals of one callgrind dump."""
    totals, names = {}, []
    for line in open(path):
        if line.startswith("events:"):
            names = line.split()[1:]
        # `totals:` (the final dump's `summary:` can be garbage after a zeroing dump).
        elif line.startswith("totals:"):
            for name, v in zip(names, line.split()[1:]):
                totals[name] = totals.get(name, 0) + int(v)
    return totals

if __name__ == "__main__":
    main()
