#!/usr/bin/env python3
"""Load harness: pingress vs nginx vs haproxy on 127.0.0.1, same routes, same backend, same
load generator, in one run; plus `pingora-floor`, a plain Pingora proxy from the same binary
(`pingress floor`: same Pingora build, server config and forwarded headers, no routing,
metrics or logs), which shows what pingress costs above Pingora itself.

Per scenario and round, each proxy is run in turn (interleaved, so drift on a noisy machine
hits all of them alike; each round starts with the next proxy in the list); the figures
reported are medians over the rounds:

* requests/s and latency p50/p99/p99.9 from the load generator (wrk, or h2load for HTTP/2);
* proxy CPU microseconds per request, from the proxy processes' own CPU time
  (/proc/PID/task/*/schedstat, nanoseconds, all threads and worker processes, plus workers
  that exited during the run, from the parent's cutime/cstime) over the run, divided by the
  requests completed;
* peak RSS (VmHWM, summed over the proxy's processes) after the scenario;
* errors: connect/read/write/timeout errors plus non-2xx answers;
* pingress (and pingress-b) over pingora-floor paired by round: the median of the rounds'
  ratios and its quartiles, which leave out the drift between rounds.

The proxy under test is pinned to the last CPU, the load generator and the echo backend to
the others (when the machine has at least 2). Every proxy runs one worker thread/process.

Each measured run follows an unmeasured warm-up with the same load (--warmup, 2 s).

Usage: benches/load/run [--smoke] [--rounds N] [--duration S] [--warmup S] [--scenarios a,b]
                        [--proxies p,q]
Output: benches/results/latest.{json,md,svg} (or --out DIR).
"""

import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# PINGRESS_BIN points the harness at another build (A/B comparisons of hot-path changes).
BIN = Path(os.environ.get("PINGRESS_BIN", ROOT / "target" / "release" / "pingress"))
# PINGRESS_BIN_B: a second build, run as the proxy `pingress-b` (same config as `pingress`) in
# the same interleaved rounds, for A/B comparisons finer than the drift between two runs.
BIN_B = os.environ.get("PINGRESS_BIN_B")

# name: (description, protocol, path, mode, connections)
#   mode: keepalive | close (new connection per request) | h2 | hosts | churn
SCENARIOS = {
    "h1-small": ("HTTP/1.1 keep-alive, 13-byte response", "http", "/?size=13", "keepalive", 50),
    "h1-16k": ("HTTP/1.1 keep-alive, 16 KiB response", "http", "/?size=16384", "keepalive", 50),
    "h1-1m": ("HTTP/1.1 keep-alive, 1 MiB response", "http", "/?size=1048576", "keepalive", 10),
    "h1-newconn": ("HTTP/1.1, new connection per request", "http", "/?size=13", "close", 50),
    "tls-small": ("TLS keep-alive, 13-byte response", "https", "/?size=13", "keepalive", 50),
    "tls-newconn": ("TLS, new connection (full handshake) per request", "https", "/?size=13", "close", 50),
    "h2-tls": ("HTTP/2 over TLS, 10 connections x 10 streams", "https", "/?size=13", "h2", 10),
    "hosts-1000": ("1,000 hosts x 10 paths, random host+path per request", "http", "/?size=13", "hosts", 50),
    # The same routes and load, given to pingress as one Gateway and 1,000 HTTPRoutes (the
    # peers serve the same configuration as in hosts-1000).
    "hosts-1000-gateway": ("hosts-1000 as Gateway API: one Gateway, 1,000 HTTPRoutes x 10 PathPrefix rules",
                           "http", "/?size=13", "hosts", 50),
    # Scale: hosts-1000's load over 10 and 50 times the Ingresses (not in the default run:
    # name them with --scenarios; docs/benchmarks.md, "Scale").
    "hosts-10000": ("10,000 hosts x 10 paths, random host+path per request", "http", "/?size=13", "hosts", 50),
    "hosts-50000": ("50,000 hosts x 10 paths, random host+path per request", "http", "/?size=13", "hosts", 50),
    "churn": ("route and endpoint change every 100 ms under load", "http", "/?size=13", "churn", 50),
    "annotations-1000": ("1,000 Ingresses with ingress-nginx annotations (regex path, rewrite-target, "
                         "cookie affinity, canary by header), random host per request; 1 in 10 requests "
                         "to the canary, half with an affinity cookie", "http", "/?size=13", "annotations", 50),
    # The access policies' cost: h1-small's route with one policy each (compare with h1-small).
    "policy-allowlist": ("h1-small with whitelist-source-range (3 CIDRs, the client in the last)",
                         "http", "/?size=13", "keepalive", 50),
    "policy-limit": ("h1-small with limit-rps and limit-connections set high enough never to refuse",
                     "http", "/?size=13", "keepalive", 50),
    "policy-basic-auth": ("h1-small with basic auth (bcrypt user; verification cached after the first)",
                          "http", "/?size=13", "keepalive", 50),
    # Tracing's cost: h1-small with OpenTelemetry on, exporting OTLP/HTTP to a collector
    # stand-in (an echo backend answering 200 to every export); compare with h1-small.
    "slowloris": ("h1-small while 1,000 slowloris connections send a header byte per second and never end "
                  "their head; head timeout 3 s on every proxy", "http", "/?size=13", "slowloris", 50),
    "tracing-1pct": ("h1-small with tracing on, sampling_ratio 0.01, OTLP export", "http", "/?size=13",
                     "keepalive", 50),
    "tracing-all": ("h1-small with tracing on, sampling_ratio 1.0, OTLP export", "http", "/?size=13",
                    "keepalive", 50),
}
# Run only when named (their set-up takes minutes per proxy).
SCALE_ONLY = {"hosts-10000", "hosts-50000"}
# Report tables, one per family of scenarios (in this order).
FAMILIES = [
    ("HTTP/1.1 keep-alive, by response size", ["h1-small", "h1-16k", "h1-1m"]),
    ("New connections", ["h1-newconn", "tls-newconn"]),
    ("TLS and HTTP/2", ["tls-small", "h2-tls"]),
    ("Routing at 1,000 hosts", ["hosts-1000", "hosts-1000-gateway", "annotations-1000"]),
    ("Routing at 10,000 and 50,000 hosts", ["hosts-10000", "hosts-50000"]),
    ("Changes and hostile clients", ["churn", "slowloris"]),
    ("pingress's own features against h1-small",
     ["policy-allowlist", "policy-limit", "policy-basic-auth", "tracing-1pct", "tracing-all"]),
]
# The slowloris scenario: attackers, their byte interval, and every proxy's head timeout.
SLOWLORIS = {"connections": 1000, "interval_s": 1.0, "head_timeout_s": 3}
# The tracing scenarios' sampling ratio.
TRACING = {"tracing-1pct": 0.01, "tracing-all": 1.0}
# Annotations of the policy scenarios, and the Authorization header the load sends.
POLICY_ANNOTATIONS = {
    "policy-allowlist": 'nginx.ingress.kubernetes.io/whitelist-source-range: "10.0.0.0/8, 192.168.0.0/16, 127.0.0.0/8"',
    "policy-limit": 'nginx.ingress.kubernetes.io/limit-rps: "10000000", nginx.ingress.kubernetes.io/limit-connections: "100000"',
    "policy-basic-auth": ('nginx.ingress.kubernetes.io/auth-type: basic, nginx.ingress.kubernetes.io/auth-secret: bench-users'),
}
# glibc crypt(3) bcrypt of "s3cret!" (cost 5), user "bench".
BENCH_HTPASSWD = "bench:$2y$05$abcdefghijklmnopqrstuulXbhLU5N9MDcFlG1r2Raysvz.c5v0j2\n"
BENCH_AUTH = "Basic YmVuY2g6czNjcmV0IQ=="
# Peers that cannot express a scenario are marked in the report, not measured.
_POLICY_ONLY = {p: "not written: this scenario measures pingress's own policy cost against h1-small"
                for p in ["ingress-nginx-eq", "nginx", "haproxy", "caddy"]}
_POLICY_ONLY["pingora-floor"] = "no policies: cannot express the scenario"
_TRACING_ONLY = {p: "not written: this scenario measures pingress's own tracing cost against h1-small"
                 for p in ["ingress-nginx-eq", "nginx", "haproxy", "caddy"]}
_TRACING_ONLY["pingora-floor"] = "no tracing: cannot express the scenario"
CANNOT = {
    "tracing-1pct": _TRACING_ONLY,
    "tracing-all": _TRACING_ONLY,
    "churn": {"pingora-floor": "one fixed backend: cannot follow churn"},
    "slowloris": {"pingora-floor": "no request-head timeout in plain Pingora: slow heads stay open"},
    "policy-allowlist": _POLICY_ONLY,
    "policy-limit": _POLICY_ONLY,
    "policy-basic-auth": _POLICY_ONLY,
    "annotations-1000": {"pingora-floor": "no routing: cannot express annotations"},
}
# ingress-nginx-eq: nginx plus Lua doing per request what ingress-nginx's generated config does
# (see nginx_conf); caddy: the Go net/http reverse proxy, the Traefik family's data plane.
PROXIES = ["pingress", "ingress-nginx-eq", "nginx", "haproxy", "caddy", "pingora-floor"]
# Known but not in the default run: the A/B build (PINGRESS_BIN_B).
ALL_PROXIES = PROXIES + ["pingress-b"]
HOST = "bench.local"


def log(msg):
    print(msg, file=sys.stderr, flush=True)


_GIVEN_PORTS = set()


def free_port():
    """A port the OS just handed out, never one handed out before in this run (a released
    port can come straight back)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _GIVEN_PORTS:
            _GIVEN_PORTS.add(port)
            return port


def wait_port(port, timeout=20.0):
    end = time.time() + timeout
    while time.time() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def wait_answered(req, timeout):
    """Until `req` (a URL or a urllib Request) gets a 2xx, for at most `timeout` seconds; a
    proxy still failing then shows in the run's errors."""
    end = time.time() + timeout
    while time.time() < end:
        try:
            urllib.request.urlopen(req, timeout=5).read()
            return
        except OSError:  # urllib.error.HTTPError too: refused or not routed yet
            time.sleep(0.05)


def cpus():
    n = os.cpu_count() or 1
    if n >= 2 and shutil.which("taskset"):
        return [str(n - 1)], [",".join(str(i) for i in range(n - 1))]
    return None, None


PROXY_CPU, CLIENT_CPU = cpus()


def pinned(cmd, cpu):
    return (["taskset", "-c", cpu[0]] + cmd) if cpu else cmd


# ---------------------------------------------------------------- process accounting


def tree(pid):
    """pid and all its descendants."""
    out = [pid]
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            children = Path(f"/proc/{pid}/task/{tid}/children").read_text().split()
            for c in children:
                out.extend(tree(int(c)))
    except OSError:
        pass
    return out


TICK_NS = 1e9 / os.sysconf("SC_CLK_TCK")


def cpu_ns(pid):
    """CPU time of the process tree: live threads (schedstat, ns) plus the CPU of children
    that exited and were reaped (cutime + cstime, clock ticks), e.g. nginx or haproxy workers
    replaced by a reload."""
    total = 0
    for p in tree(pid):
        try:
            for tid in os.listdir(f"/proc/{p}/task"):
                total += int(Path(f"/proc/{p}/task/{tid}/schedstat").read_text().split()[0])
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int((int(fields[13]) + int(fields[14])) * TICK_NS)  # cutime, cstime
        except (OSError, ValueError, IndexError):
            pass
    return total


def rss_kib(pid, key="VmHWM"):
    total = 0
    for p in tree(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith(key + ":"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


# ---------------------------------------------------------------- configs


def is_hosts(scenario):
    """hosts-1000, hosts-1000-gateway and the scale scenarios: N hosts x 10 paths."""
    return scenario.startswith("hosts-")


def routes_for(scenario):
    """(host, path) pairs every proxy serves, all to the same backend."""
    if is_hosts(scenario):
        n = int(scenario.split("-")[1])
        return [(f"h{i}.bench.local", f"/p{j}") for i in range(n) for j in range(10)]
    if scenario == "annotations-1000":
        return [(f"a{i}.bench.local", "/svc") for i in range(1000)]
    return [(HOST, "/")]


# The path rule of the annotations scenario, as ingress-nginx's rewrite example writes it.
ANN_PATH = "/svc(/|$)(.*)"


def annotated_ingresses(routes):
    """Per host: a main Ingress (use-regex, rewrite-target, cookie affinity) and a canary
    Ingress by header on the same host and path."""
    out = []
    rule = (f"      - {{path: \"{ANN_PATH}\", pathType: ImplementationSpecific, "
            "backend: {service: {name: be, port: {number: 80}}}}\n")
    for i, (h, _) in enumerate(routes):
        main = ('{nginx.ingress.kubernetes.io/ssl-redirect: "false", nginx.ingress.kubernetes.io/use-regex: "true", '
                'nginx.ingress.kubernetes.io/rewrite-target: "/$2", nginx.ingress.kubernetes.io/affinity: cookie}')
        canary = ('{nginx.ingress.kubernetes.io/ssl-redirect: "false", nginx.ingress.kubernetes.io/canary: "true", '
                  'nginx.ingress.kubernetes.io/canary-by-header: X-Canary}')
        for name, ann in [(f"a{i}", main), (f"a{i}-canary", canary)]:
            out.append(
                f"apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: {name}, namespace: bench,"
                f" annotations: {ann}}}\nspec:\n  ingressClassName: pingress\n  rules:\n  - host: {h}\n"
                f"    http:\n      paths:\n{rule}")
    return out


def write_certs(d):
    key, crt = d / "tls.key", d / "tls.crt"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", str(key), "-out", str(crt), "-days", "30",
         "-subj", f"/CN={HOST}", "-addext", f"subjectAltName=DNS:{HOST},IP:127.0.0.1"],
        check=True, capture_output=True)
    (d / "combined.pem").write_text(crt.read_text() + key.read_text())
    return crt, key


def pingress_manifests(d, routes, backends, crt, key, scenario=None):
    import base64
    m = d / "manifests"
    m.mkdir(exist_ok=True)
    for f in m.iterdir():
        f.unlink()
    docs = ["apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {name: pingress}\n"
            "spec: {controller: pingress.dev/ingress-controller}\n",
            "apiVersion: v1\nkind: Service\nmetadata: {name: be, namespace: bench}\n"
            "spec:\n  ports:\n  - {name: http, port: 80}\n"]
    (m / "00-base.yaml").write_text("---\n".join(docs))
    pingress_endpoints(d, backends)
    crt64 = base64.b64encode(crt.read_bytes()).decode()
    key64 = base64.b64encode(key.read_bytes()).decode()
    users64 = base64.b64encode(BENCH_HTPASSWD.encode()).decode()
    (m / "05-secret.yaml").write_text(
        "apiVersion: v1\nkind: Secret\nmetadata: {name: bench-tls, namespace: bench}\n"
        f"type: kubernetes.io/tls\ndata:\n  tls.crt: {crt64}\n  tls.key: {key64}\n"
        "---\napiVersion: v1\nkind: Secret\nmetadata: {name: bench-users, namespace: bench}\n"
        f"type: Opaque\ndata:\n  auth: {users64}\n")
    if scenario == "annotations-1000":
        (m / "20-ingresses.yaml").write_text("---\n".join(annotated_ingresses(routes)))
        return m
    by_host = {}
    for h, p in routes:
        by_host.setdefault(h, []).append(p)
    if scenario == "hosts-1000-gateway":
        gw = ["apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: pingress}\n"
              "spec: {controllerName: pingress.dev/gateway-controller}\n",
              "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: bench, namespace: bench}\n"
              "spec:\n  gatewayClassName: pingress\n  listeners: [{name: http, protocol: HTTP, port: 80}]\n"]
        for i, (h, paths) in enumerate(by_host.items()):
            rules = "".join(
                f"  - matches: [{{path: {{type: PathPrefix, value: {p}}}}}]\n"
                f"    backendRefs: [{{name: be, port: 80}}]\n" for p in paths)
            gw.append(f"apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: r{i}, namespace: bench}}\n"
                      f"spec:\n  parentRefs: [{{name: bench}}]\n  hostnames: [{h}]\n  rules:\n{rules}")
        (m / "20-gateway.yaml").write_text("---\n".join(gw))
        return m
    out = []
    policy = f", {POLICY_ANNOTATIONS[scenario]}" if scenario in POLICY_ANNOTATIONS else ""
    for i, (h, paths) in enumerate(by_host.items()):
        rule = "".join(
            f"      - {{path: {p}, pathType: Prefix, backend: {{service: {{name: be, port: {{number: 80}}}}}}}}\n"
            for p in paths)
        tls = f"  tls:\n  - hosts: [{h}]\n    secretName: bench-tls\n"
        out.append(
            f"apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: r{i}, namespace: bench,"
            f" annotations: {{nginx.ingress.kubernetes.io/ssl-redirect: \"false\"{policy}}}}}\n"
            f"spec:\n  ingressClassName: pingress\n{tls}  rules:\n  - host: {h}\n    http:\n      paths:\n{rule}")
    (m / "20-ingresses.yaml").write_text("---\n".join(out))
    return m


def pingress_endpoints(d, backends):
    slices = []
    for i, port in enumerate(backends):
        slices.append(
            f"apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: be-{i}\n"
            f"  namespace: bench\n  labels: {{kubernetes.io/service-name: be}}\naddressType: IPv4\n"
            f"ports:\n- {{name: http, port: {port}}}\nendpoints:\n- addresses: [\"127.0.0.1\"]\n")
    tmp = d / "manifests" / ".10-endpoints.tmp"
    tmp.write_text("---\n".join(slices))
    tmp.rename(d / "manifests" / "10-endpoints.yaml")


def pingress_conf(d, http, https, admin, manifests, tracing=None, scenario=None):
    """`tracing`: (sampling ratio, collector port) to turn OpenTelemetry on."""
    conf = d / "pingress.yaml"
    trace = ""
    if scenario == "slowloris":
        # Every attacker comes from 127.0.0.1, as the load does: no per-client limit.
        trace += (f"  edge: {{head_timeout_ms: {SLOWLORIS['head_timeout_s'] * 1000}, "
                  "max_connections_per_client: 0}\n")
    if tracing:
        trace = (f"  tracing: {{endpoint: \"http://127.0.0.1:{tracing[1]}/v1/traces\", "
                 f"sampling_ratio: {tracing[0]}}}\n")
    conf.write_text(
        f"version: 1\nthreads: 1\nwork_stealing: false\npid_file: {d}/pingress.pid\n"
        f"upgrade_sock: {d}/pingress.sock\nupstream_keepalive_pool_size: 256\n"
        f"pingress:\n  http_listen: [\"127.0.0.1:{http}\"]\n  https_listen: [\"127.0.0.1:{https}\"]\n"
        f"  admin_listen: \"127.0.0.1:{admin}\"\n"
        "  debug_listen: \"\"\n"
        f"  source: {{kind: manifests, manifests_dir: {manifests}, poll_interval_ms: 50}}\n"
        f"  debounce_ms: 20\n  access_log: {{enabled: false}}\n" + trace)
    return conf


# ingress-nginx-eq: what ingress-nginx's nginx.tmpl makes nginx do per request, kept small.
# The real template runs, per request, `rewrite_by_lua` (balancer.rewrite, lua_ingress),
# `header_filter_by_lua` (plugins), the upstream `balancer_by_lua` choosing the endpoint from a
# Lua table the controller POSTs to /configuration/backends (synced into each worker by a
# 1 s timer), and `log_by_lua` (balancer.log, monitor.call batching metrics for the
# controller's collector). Here: the same phases, a round robin over the synced table, and a
# metrics hook counting requests and summing latency per host and status in a shared dict.
LUA_HTTP = """
  lua_shared_dict configuration 1m;
  lua_shared_dict metrics 8m;
  init_worker_by_lua_block {
    backends, version, rr = {}, -1, 0
    local function sync()
      local v = ngx.shared.configuration:get("version") or 0
      if v == version then return end
      local list = {}
      for hp in (ngx.shared.configuration:get("backends") or ""):gmatch("[^,]+") do
        local h, p = hp:match("([^:]+):(%d+)")
        list[#list + 1] = { h, tonumber(p) }
      end
      backends, version = list, v
    end
    sync()
    ngx.timer.every(1, sync)
  }
  upstream upstream_balancer {
    server 0.0.0.1;
    balancer_by_lua_block {
      local n = #backends
      if n == 0 then return ngx.exit(503) end
      rr = rr % n + 1
      local ok, err = require("ngx.balancer").set_current_peer(backends[rr][1], backends[rr][2])
      if not ok then ngx.log(ngx.ERR, err) end
    }
    keepalive 256;
  }
"""
# The metrics hook, as ingress-nginx's monitor.call(): per host and status, a count and a
# latency sum in a shared dict.
LUA_METRICS_LOG = """      log_by_lua_block {
        local m, k = ngx.shared.metrics, ngx.var.host .. " " .. ngx.var.status
        m:incr(k .. " n", 1, 0)
        m:incr(k .. " t", tonumber(ngx.var.request_time) or 0, 0)
      }
"""
LUA_LOCATION = """      rewrite_by_lua_block { ngx.ctx.balancer = "upstream_balancer" }
      header_filter_by_lua_block { ngx.header["X-Served-By"] = nil }
""" + LUA_METRICS_LOG

# annotations-1000 in ingress-nginx's way: the canary by header and the cookie affinity are
# decided in Lua per request (balancer.lua's route_to_alternative_balancer, and the sticky
# balancer, which hashes the cookie to an endpoint and issues the cookie when there is none),
# then the balancer sets that endpoint. A second upstream, so the other scenarios' Lua is
# unchanged.
LUA_ANN_HTTP = """
  upstream ann_balancer {
    server 0.0.0.1;
    balancer_by_lua_block {
      local n = #backends
      if n == 0 then return ngx.exit(503) end
      local pick = ngx.ctx.pick
      if not pick then rr = rr % n + 1; pick = rr end
      local ok, err = require("ngx.balancer").set_current_peer(backends[pick][1], backends[pick][2])
      if not ok then ngx.log(ngx.ERR, err) end
    }
    keepalive 256;
  }
"""
LUA_ANN_LOCATION = """      rewrite_by_lua_block {
        ngx.ctx.balancer = "ann_balancer"
        local n = #backends
        if ngx.var.http_x_canary == "always" or n == 0 then return end
        local c = ngx.var.cookie_INGRESSCOOKIE
        if c then
          ngx.ctx.pick = ngx.crc32_short(c) % n + 1
        else
          rr = rr % n + 1
          ngx.ctx.pick = rr
          ngx.ctx.cookie = ngx.md5(backends[rr][1] .. ":" .. backends[rr][2])
        end
      }
      header_filter_by_lua_block {
        ngx.header["X-Served-By"] = nil
        if ngx.ctx.cookie then
          ngx.header["Set-Cookie"] = "INGRESSCOOKIE=" .. ngx.ctx.cookie .. "; Path=/; HttpOnly"
        end
      }
""" + LUA_METRICS_LOG


def lua_backends(backends):
    return ",".join(f"127.0.0.1:{p}" for p in backends)


def nginx_conf(d, http, https, routes, backends, crt, key, scenario=None, lua_cfg=None):
    """Plain nginx, or with `lua_cfg` (a port for /configuration/backends) the
    ingress-nginx-equivalent nginx+Lua."""
    lua = lua_cfg is not None
    servers = {}
    for h, p in routes:
        servers.setdefault(h, []).append(p)
    blocks = []
    # The annotations scenario: the location ingress-nginx generates for a regex path with
    # rewrite-target (`~*`, then `rewrite ... break`), the canary header as a map choosing the
    # upstream, and cookie affinity approximated by consistent hashing of the cookie (plain
    # nginx cannot issue the cookie; ingress-nginx does that in Lua).
    ann = scenario == "annotations-1000"
    for h, paths in servers.items():
        if ann and lua:
            locs = (f'    location ~* "^{ANN_PATH}" {{\n{LUA_ANN_LOCATION}'
                    f'      rewrite "(?i){ANN_PATH}" /$2 break;\n'
                    "      proxy_pass http://ann_balancer;\n    }\n")
        elif ann:
            locs = (f'    location ~* "^{ANN_PATH}" {{\n      rewrite "(?i){ANN_PATH}" /$2 break;\n'
                    "      proxy_pass http://$be_pick;\n    }\n")
        elif lua:
            locs = "".join(f"    location {p} {{\n{LUA_LOCATION}      proxy_pass http://upstream_balancer;\n    }}\n"
                           for p in paths)
        else:
            locs = "".join(f"    location {p} {{ proxy_pass http://be; }}\n" for p in paths)
        blocks.append(
            f"  server {{\n    listen 127.0.0.1:{http};\n    listen 127.0.0.1:{https} ssl http2;\n"
            f"    server_name {h};\n{locs}  }}\n")
    ups = "".join(f"    server 127.0.0.1:{p};\n" for p in backends)
    extra = ""
    if ann:
        extra = (f"  map $http_x_canary $be_pick {{ always be_canary; default be; }}\n"
                 f"  upstream be_canary {{\n{ups}    keepalive 256;\n  }}\n")
        ups = "    hash $cookie_INGRESSCOOKIE consistent;\n" + ups
    slow = (f"  client_header_timeout {SLOWLORIS['head_timeout_s']}s;\n"
            if scenario == "slowloris" else "")
    modules = ""
    if lua and ann:
        extra += LUA_ANN_HTTP
    if lua:
        modules = ("load_module /usr/share/nginx/modules/ndk_http_module.so;\n"
                   "load_module /usr/share/nginx/modules/ngx_http_lua_module.so;\n")
        extra += LUA_HTTP
        extra += (f"  server {{\n    listen 127.0.0.1:{lua_cfg};\n    location = /configuration/backends {{\n"
                  "      content_by_lua_block {\n        ngx.req.read_body()\n"
                  "        ngx.shared.configuration:set(\"backends\", ngx.req.get_body_data())\n"
                  "        ngx.shared.configuration:incr(\"version\", 1, 0)\n      }\n    }\n  }\n")
    conf = d / "nginx.conf"
    conf.write_text(f"""{modules}
worker_processes 1;
daemon off;
master_process on;
pid {d}/nginx.pid;
error_log {d}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {d}/nginx-body;
  proxy_temp_path {d}/nginx-proxy;
  fastcgi_temp_path {d}/nginx-fastcgi;
  uwsgi_temp_path {d}/nginx-uwsgi;
  scgi_temp_path {d}/nginx-scgi;
  server_names_hash_bucket_size 128;
  server_names_hash_max_size 8192;
  keepalive_requests 100000;
{slow}  ssl_certificate {crt};
  ssl_certificate_key {key};
  ssl_protocols TLSv1.2 TLSv1.3;
  ssl_session_tickets off;
  proxy_http_version 1.1;
  proxy_buffering off;
  proxy_set_header Connection "";
  proxy_set_header Host $host;
  proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
  proxy_set_header X-Real-IP $remote_addr;
  proxy_set_header X-Forwarded-Proto $scheme;
  proxy_set_header X-Forwarded-Host $host;
  proxy_set_header X-Forwarded-Port $server_port;
  proxy_set_header X-Request-ID $request_id;
{extra}  upstream be {{
{ups}    keepalive 256;
  }}
  server {{
    listen 127.0.0.1:{http} default_server;
    listen 127.0.0.1:{https} ssl http2 default_server;
    return 404;
  }}
{"".join(blocks)}}}
""")
    return conf


def caddy_conf(d, http, https, admin, routes, backends, crt, key, scenario=None):
    """Caddy's JSON config: a route per host (host matcher) with a subroute of path
    matchers, longest first, as a Caddyfile with one site block per host compiles to."""
    servers = {}
    for h, p in routes:
        servers.setdefault(h, []).append(p)
    proxy = {"handler": "reverse_proxy",
             "upstreams": [{"dial": f"127.0.0.1:{p}"} for p in backends],
             "load_balancing": {"selection_policy": {"policy": "round_robin"}},
             "headers": {"request": {"set": {"X-Request-Id": ["{http.request.uuid}"],
                                             "X-Real-Ip": ["{http.request.remote.host}"]}}}}
    host_routes = []
    if scenario == "annotations-1000":
        # The regex path with rewrite-target (case-insensitive, as `~*`), the canary by header
        # first, then the main backend with cookie affinity (Caddy's cookie policy issues the
        # cookie when there is none).
        rewrite = {"handler": "rewrite", "uri": "/{http.regexp.svc.2}?{http.request.uri.query}"}
        path = {"path_regexp": {"name": "svc", "pattern": "(?i)^" + ANN_PATH}}
        sticky = dict(proxy, load_balancing={"selection_policy": {"policy": "cookie",
                                                                   "name": "INGRESSCOOKIE"}})
        for h in servers:
            subs = [{"match": [dict(path, header={"X-Canary": ["always"]})], "handle": [rewrite, proxy]},
                    {"match": [path], "handle": [rewrite, sticky]}]
            host_routes.append({"match": [{"host": [h]}],
                                "handle": [{"handler": "subroute", "routes": subs}], "terminal": True})
        servers = {}
    for h, paths in servers.items():
        subs = []
        for p in sorted(paths, key=len, reverse=True):
            r = {"handle": [proxy]}
            if p != "/":
                r["match"] = [{"path": [p, p.rstrip("/") + "/*"]}]
            subs.append(r)
        host_routes.append({"match": [{"host": [h]}],
                            "handle": [{"handler": "subroute", "routes": subs}], "terminal": True})
    host_routes.append({"handle": [{"handler": "static_response", "status_code": 404}]})

    def server(listen, tls):
        srv = {"listen": [f"127.0.0.1:{listen}"], "routes": host_routes,
               "automatic_https": {"disable": True}, "protocols": ["h1", "h2"] if tls else ["h1"]}
        if tls:
            # h2load dials 127.0.0.1 and sends no SNI; wrk sends "127.0.0.1" (the cert has that IP).
            srv["tls_connection_policies"] = [{"default_sni": HOST}]
        if scenario == "slowloris":
            srv["read_header_timeout"] = f"{SLOWLORIS['head_timeout_s']}s"
        return srv
    cfg = {"admin": {"listen": f"127.0.0.1:{admin}"},
           "logging": {"logs": {"default": {"level": "ERROR"}}},
           "apps": {"http": {"servers": {"plain": server(http, False), "tls": server(https, True)}},
                    "tls": {"certificates": {"load_files": [{"certificate": str(crt), "key": str(key)}]}}}}
    conf = d / "caddy.json"
    conf.write_text(json.dumps(cfg))
    return conf


def haproxy_conf(d, http, https, routes, backends, pem, scenario=None):
    lines = [f"{h}{p} be" for h, p in routes]
    (d / "routes.map").write_text("\n".join(lines) + "\n")
    servers = "".join(f"  server s{i} 127.0.0.1:{p}\n" for i, p in enumerate(backends))
    route = f"  use_backend %[base,map_beg({d}/routes.map)]\n"
    extra = ""
    if scenario == "annotations-1000":
        # As a haproxy user writes ingress-nginx's annotated rule: the hosts in a map, the
        # regex path tested once (case-insensitive, as `~*`) and remembered, because
        # replace-path (rewrite-target /$2) changes what later rules see; the canary header
        # picks the canary backend, else the main one with cookie persistence (haproxy
        # inserts the cookie when the request has none, or one naming no server).
        (d / "hosts.map").write_text("".join(f"{h} ann\n" for h, _ in routes))
        ann = "{ var(txn.ann) -m found }"
        route = (f"  http-request set-var(txn.ann) req.hdr(host),field(1,:),lower,map_str({d}/hosts.map)"
                 f" if {{ path_reg -i ^{ANN_PATH} }}\n"
                 f"  http-request replace-path (?i)^{ANN_PATH} /\\2 if {ann}\n"
                 f"  use_backend be_canary if {ann} {{ req.hdr(x-canary) -m str always }}\n"
                 f"  use_backend be_sticky if {ann}\n")
        sticky = "".join(f"  server s{i} 127.0.0.1:{p} cookie s{i}\n" for i, p in enumerate(backends))
        extra = (f"backend be_canary\n{servers}"
                 f"backend be_sticky\n  cookie INGRESSCOOKIE insert indirect nocache httponly\n{sticky}")
    slow = (f"  timeout http-request {SLOWLORIS['head_timeout_s']}s\n"
            if scenario == "slowloris" else "")
    conf = d / "haproxy.cfg"
    conf.write_text(f"""
global
  nbthread 1
  maxconn 4000
  pidfile {d}/haproxy.pid
  tune.ssl.default-dh-param 2048
  ssl-default-bind-options ssl-min-ver TLSv1.2 no-tls-tickets
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
{slow}  option http-keep-alive
  http-reuse always
frontend fe
  bind 127.0.0.1:{http}
  bind 127.0.0.1:{https} ssl crt {pem} alpn h2,http/1.1
  unique-id-format %{{+X}}o%ci%cp%fp%Ts%rt
  option forwardfor
  http-request set-header X-Real-IP %[src]
  http-request set-header X-Forwarded-Proto https if {{ ssl_fc }}
  http-request set-header X-Forwarded-Proto http if !{{ ssl_fc }}
  http-request set-header X-Forwarded-Host %[req.hdr(host)]
  http-request set-header X-Forwarded-Port %[dst_port]
  http-request set-header X-Request-ID %[unique-id]
{route}  default_backend notfound
backend be
{servers}{extra}backend notfound
  http-request return status 404
""")
    return conf


# ---------------------------------------------------------------- proxies


class Proxy:
    def __init__(self, name, d, routes, backends, certs, scenario=None):
        """`certs`: the directory `write_certs` filled (tls.crt, tls.key, combined.pem)."""
        self.name, self.d, self.scenario = name, d, scenario
        self.http, self.https = free_port(), free_port()
        self.routes, self.backends = routes, backends
        self.crt, self.key, self.pem = certs / "tls.crt", certs / "tls.key", certs / "combined.pem"
        self.proc = None
        # The tracing scenarios' collector port (main sets it: the second echo backend).
        self.collector = None

    def start(self):
        d = self.d
        if self.is_pingress:
            self.admin = free_port()
            m = pingress_manifests(d, self.routes, self.backends, self.crt, self.key, self.scenario)
            tracing = (TRACING[self.scenario], self.collector) if self.scenario in TRACING else None
            conf = pingress_conf(d, self.http, self.https, self.admin, m, tracing, self.scenario)
            cmd = [str(BIN if self.name == "pingress" else BIN_B), "-c", str(conf)]
        elif self.name == "pingora-floor":
            # The gateway's config file (server section, listeners, timeouts); no routes.
            conf = pingress_conf(d, self.http, self.https, free_port(), d)
            cmd = [str(BIN), "-c", str(conf), "floor", "--backend", f"127.0.0.1:{self.backends[0]}",
                   "--cert", str(self.crt), "--key", str(self.key)]
        elif self.name in ("nginx", "ingress-nginx-eq"):
            for sub in ["nginx-body", "nginx-proxy", "nginx-fastcgi", "nginx-uwsgi", "nginx-scgi"]:
                (d / sub).mkdir(exist_ok=True)
            self.lua_cfg = free_port() if self.name == "ingress-nginx-eq" else None
            conf = nginx_conf(d, self.http, self.https, self.routes, self.backends, self.crt, self.key,
                              self.scenario, self.lua_cfg)
            cmd = ["nginx", "-c", str(conf), "-p", str(d)]
        elif self.name == "caddy":
            self.admin = free_port()
            conf = caddy_conf(d, self.http, self.https, self.admin, self.routes, self.backends, self.crt,
                              self.key, self.scenario)
            cmd = ["caddy", "run", "--config", str(conf)]
        else:
            conf = haproxy_conf(d, self.http, self.https, self.routes, self.backends, self.pem,
                                self.scenario)
            cmd = ["haproxy", "-W", "-db", "-f", str(conf)]
        self.conf = conf
        self.proc = subprocess.Popen(pinned(cmd, PROXY_CPU), stdout=subprocess.DEVNULL,
                                     stderr=open(d / f"{self.name}.stderr", "w"))
        # The scale scenarios' configurations take every proxy seconds to minutes to load.
        patience = 600 if self.scenario in SCALE_ONLY else 30
        wait_port(self.http, patience)
        wait_port(self.https, patience)
        if self.is_pingress:
            wait_answered(f"http://127.0.0.1:{self.admin}/readyz", patience)
        if self.name == "ingress-nginx-eq":
            # As the controller does after start: POST the endpoints; the worker's 1 s timer
            # syncs them. Until then its balancer fails (500): wait for a routed answer.
            wait_port(self.lua_cfg)
            self.post_backends(self.backends)
            self.wait_routed()
        # Warm-up: first requests of each kind fill pools and caches.
        subprocess.run(["curl", "-sk", "-o", "/dev/null", "-H", f"Host: {self.routes[0][0]}",
                        f"http://127.0.0.1:{self.http}{self.routes[0][1]}"], check=False)
        return self

    @property
    def is_pingress(self):
        return self.name in ("pingress", "pingress-b")

    @property
    def pid(self):
        return self.proc.pid

    def wait_routed(self, timeout=10.0):
        """Until a request to the first route is answered by a pod (a 2xx). The policy
        scenarios, whose routes would refuse it, do not run ingress-nginx-eq."""
        host, path = self.routes[0]
        wait_answered(urllib.request.Request(f"http://127.0.0.1:{self.http}{path}", headers={"Host": host}),
                      timeout)

    def post_backends(self, backends):
        req = urllib.request.Request(f"http://127.0.0.1:{self.lua_cfg}/configuration/backends",
                                     data=lua_backends(backends).encode(), method="POST")
        urllib.request.urlopen(req, timeout=5).read()

    def reconfigure(self, backends):
        """Churn step: point the routes at `backends` (live for pingress, ingress-nginx-eq's Lua
        table and caddy's admin API; a reload for nginx and haproxy)."""
        self.backends = backends
        if self.is_pingress:
            pingress_endpoints(self.d, backends)
        elif self.name == "ingress-nginx-eq":
            self.post_backends(backends)
        elif self.name == "caddy":
            conf = caddy_conf(self.d, self.http, self.https, self.admin, self.routes, backends, self.crt,
                              self.key, self.scenario)
            req = urllib.request.Request(f"http://127.0.0.1:{self.admin}/load", data=conf.read_bytes(),
                                         headers={"Content-Type": "application/json"}, method="POST")
            urllib.request.urlopen(req, timeout=10).read()
        elif self.name == "nginx":
            nginx_conf(self.d, self.http, self.https, self.routes, backends, self.crt, self.key)
            self.proc.send_signal(signal.SIGHUP)
        else:
            haproxy_conf(self.d, self.http, self.https, self.routes, backends, self.pem)
            self.proc.send_signal(signal.SIGUSR2)

    def stop(self):
        if self.proc:
            # Measured already: Pingora's fast shutdown (SIGINT) for pingress and the floor, as
            # SIGTERM is nginx's and haproxy's; Pingora's SIGTERM would drain for its grace
            # period (2 s by pingress's default) on every run.
            pingora = self.is_pingress or self.name == "pingora-floor"
            self.proc.send_signal(signal.SIGINT if pingora else signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# ---------------------------------------------------------------- load generators

WRK_DONE = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'RESULT {"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,"p50":%d,"p99":%d,"p999":%d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(99), latency:percentile(99.9)))
end
"""


def wrk_script(d, scenario, routes, close):
    lua = []
    hdr = '["Connection"]="close",' if close else ""
    if scenario == "annotations-1000":
        lua.append("local reqs = {}\ninit = function(args)\n")
        k = 0
        for i, (h, p) in enumerate(routes):
            for j in range(10):
                extra = ""
                if j == 0:
                    extra += '["X-Canary"]="always",'
                if j % 2 == 1:
                    extra += f'["Cookie"]="INGRESSCOOKIE={(i * 10 + j) % 97:016x}",'
                k += 1
                lua.append(f'  reqs[{k}] = wrk.format(nil, "{p}/x?size=13", {{["Host"]="{h}",{hdr}{extra}}})\n')
        lua.append("end\nlocal n = 0\nrequest = function()\n  n = n + 7919\n"
                   "  return reqs[(n % #reqs) + 1]\nend\n")
    elif is_hosts(scenario):
        # routes_for's order (host-major), built in a loop: a literal per request would pass
        # Lua's 65,536 constants per function at 10,000 hosts.
        n_hosts = len(routes) // 10
        assert routes[11] == ("h1.bench.local", "/p1")
        lua.append("local reqs = {}\ninit = function(args)\n"
                   f"  for i = 0, {n_hosts - 1} do\n    for j = 0, 9 do\n"
                   '      reqs[#reqs + 1] = wrk.format(nil, "/p" .. j .. "/x?size=13", '
                   f'{{["Host"]="h" .. i .. ".bench.local",{hdr}}})\n'
                   "    end\n  end\n")
        lua.append("end\nlocal n = 0\nrequest = function()\n  n = n + 7919\n"
                   "  return reqs[(n % #reqs) + 1]\nend\n")
    else:
        lua.append(f'wrk.headers["Host"] = "{HOST}"\n')
        if scenario == "policy-basic-auth":
            lua.append(f'wrk.headers["Authorization"] = "{BENCH_AUTH}"\n')
        if close:
            lua.append('wrk.headers["Connection"] = "close"\n')
    lua.append(WRK_DONE)
    f = d / f"wrk-{scenario}.lua"
    f.write_text("".join(lua))
    return f


def run_wrk(d, proxy, scenario, duration, conns):
    desc, proto, path, mode, _ = SCENARIOS[scenario]
    port = proxy.https if proto == "https" else proxy.http
    script = wrk_script(d, scenario, proxy.routes, mode == "close")
    url = f"{proto}://127.0.0.1:{port}{path}"
    cmd = pinned(["wrk", "-t", "1", "-c", str(conns), "-d", f"{max(1, round(duration))}s", "--timeout", "5s",
                  "-s", str(script), url], CLIENT_CPU)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    m = re.search(r"^RESULT (.*)$", out.stdout, re.M)
    if not m:
        raise RuntimeError(f"wrk gave no result: {out.stdout}\n{out.stderr}")
    r = json.loads(m.group(1))
    errors = r["connect"] + r["read"] + r["write"] + r["timeout"] + r["status"]
    return {
        "requests": r["requests"],
        "seconds": r["duration_us"] / 1e6,
        "p50_ms": r["p50"] / 1000, "p99_ms": r["p99"] / 1000, "p999_ms": r["p999"] / 1000,
        "errors": errors,
    }


def percentile(sorted_vals, q):
    if not sorted_vals:
        return 0.0
    k = min(len(sorted_vals) - 1, max(0, int(round(q / 100 * len(sorted_vals) + 0.5)) - 1))
    return sorted_vals[k]


def run_h2load(d, proxy, scenario, duration, conns):
    _, _, path, _, _ = SCENARIOS[scenario]
    logf = d / "h2load.log"
    if logf.exists():
        logf.unlink()
    url = f"https://127.0.0.1:{proxy.https}{path}"
    cmd = pinned(["h2load", "-c", str(conns), "-m", "10", "-D", str(max(1, round(duration))),
                  "-H", f":authority: {HOST}", "--log-file", str(logf), url], CLIENT_CPU)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    m = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout", out.stdout)
    if not m:
        raise RuntimeError(f"h2load gave no result: {out.stdout}\n{out.stderr}")
    done = int(m.group(1))
    failed = int(m.group(3)) + int(m.group(4)) + int(m.group(5))
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out.stdout)
    non2xx = int(codes.group(2)) + int(codes.group(3)) + int(codes.group(4)) if codes else 0
    lat = sorted(int(l.split("\t")[2]) for l in logf.read_text().splitlines() if l.count("\t") >= 2)
    return {
        "requests": done, "seconds": float(duration),
        "p50_ms": percentile(lat, 50) / 1000, "p99_ms": percentile(lat, 99) / 1000,
        "p999_ms": percentile(lat, 99.9) / 1000,
        "errors": failed + non2xx,
    }


# ---------------------------------------------------------------- the run


def measure(d, proxy, scenario, duration, backends, warmup):
    _, _, _, mode, conns = SCENARIOS[scenario]
    if warmup:
        # Not measured: the same load for `warmup` seconds first, so every proxy has filled
        # its pools and caches and (at 1,000 hosts) seen every route once before CPU time
        # and latency are taken.
        if mode == "h2":
            run_h2load(d, proxy, scenario, warmup, conns)
        else:
            run_wrk(d, proxy, scenario, warmup, conns)
    c0 = cpu_ns(proxy.pid)
    churn_steps = 0
    if mode == "churn":
        import threading
        stop = threading.Event()

        def churn():
            nonlocal churn_steps
            i = 0
            while not stop.wait(0.1):
                i += 1
                proxy.reconfigure([backends[i % len(backends)]])
                churn_steps += 1
        t = threading.Thread(target=churn)
        t.start()
        try:
            r = run_wrk(d, proxy, scenario, duration, conns)
        finally:
            stop.set()
            t.join()
    elif mode == "h2":
        r = run_h2load(d, proxy, scenario, duration, conns)
    elif mode == "slowloris":
        r = slowloris(d, proxy, scenario, duration, conns)
    else:
        r = run_wrk(d, proxy, scenario, duration, conns)
    c1 = cpu_ns(proxy.pid)
    r["rps"] = r["requests"] / r["seconds"] if r["seconds"] else 0
    r["cpu_us_per_req"] = (c1 - c0) / 1000 / r["requests"] if r["requests"] else None
    r["rss_peak_kib"] = rss_kib(proxy.pid)
    if mode == "churn":
        r["changes"] = churn_steps
    return r


def slowloris(d, proxy, scenario, duration, conns):
    """The normal load (wrk) while SLOWLORIS['connections'] attackers each send a request
    head one byte per interval, never ending it. The load runs at least the head timeout
    plus 3 s, so every attacker must have been closed by the end; reported: how many were
    closed and after how long, the normal client's success ratio, and the proxy's RSS
    before the attack and at its worst (VmRSS, sampled)."""
    import selectors
    import threading
    n, interval = SLOWLORIS["connections"], SLOWLORIS["interval_s"]
    rss_before = rss_kib(proxy.pid, "VmRSS")
    sel = selectors.DefaultSelector()
    opened = {}
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", proxy.http))
        s.sendall(f"GET /?size=13 HTTP/1.1\r\nHost: {HOST}\r\nX-Slow: ".encode())
        s.setblocking(False)
        opened[s] = time.monotonic()
        sel.register(s, selectors.EVENT_READ)
    closed_after = []
    rss_max = [rss_before]
    stop = threading.Event()

    def attack():
        next_tick = time.monotonic() + interval
        while not stop.is_set() and opened:
            for key, _ in sel.select(timeout=max(0.0, next_tick - time.monotonic())):
                s = key.fileobj
                try:
                    data = s.recv(4096)
                except OSError:
                    data = b""
                if not data:
                    closed_after.append(time.monotonic() - opened.pop(s))
                    sel.unregister(s)
                    s.close()
            if time.monotonic() >= next_tick:
                next_tick += interval
                rss_max[0] = max(rss_max[0], rss_kib(proxy.pid, "VmRSS"))
                for s in list(opened):
                    try:
                        s.send(b"x")
                    except OSError:
                        closed_after.append(time.monotonic() - opened.pop(s))
                        sel.unregister(s)
                        s.close()
    t = threading.Thread(target=attack)
    t.start()
    try:
        r = run_wrk(d, proxy, scenario, max(duration, SLOWLORIS["head_timeout_s"] + 3), conns)
    finally:
        stop.set()
        t.join()
        for s in list(opened):
            s.close()
    closed_after.sort()
    total = r["requests"] + r["errors"]
    r.update({
        "slow_opened": n, "slow_closed": len(closed_after),
        "slow_close_p50_s": percentile(closed_after, 50) if closed_after else None,
        "slow_close_max_s": closed_after[-1] if closed_after else None,
        "normal_success_pct": 100.0 * (total - r["errors"]) / total if total else 0.0,
        "rss_before_kib": rss_before, "rss_attack_max_kib": rss_max[0],
    })
    return r


def median_of(runs, key):
    vals = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def idle_and_10k_rss(d, backends):
    """pingress RSS idle (one route) and with 10,000 Ingresses loaded."""
    out = {}
    for label, routes in [("idle", [(HOST, "/")]),
                          ("10k_ingresses", [(f"h{i}.bench.local", "/") for i in range(10000)])]:
        sub = d / f"rss-{label}"
        sub.mkdir()
        p = Proxy("pingress", sub, routes, backends, d).start()
        time.sleep(1)
        out[label] = {"rss_kib": rss_kib(p.pid, "VmRSS"), "rss_peak_kib": rss_kib(p.pid)}
        p.stop()
    return out


def machine():
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kib / 1048576:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return {"cpu": model, "cores": os.cpu_count(), "memory": mem, "kernel": platform.release(),
            "pinning": f"proxy on CPU {PROXY_CPU[0]}, load generator and backend on CPU {CLIENT_CPU[0]}"
            if PROXY_CPU else "none (fewer than 2 CPUs or no taskset)"}


def versions():
    def first(cmd):
        try:
            r = subprocess.run(cmd, capture_output=True, text=True)
            return (r.stdout + r.stderr).strip().splitlines()[0]
        except (OSError, IndexError):
            return "?"
    lua = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "libnginx-mod-http-lua"],
                         capture_output=True, text=True).stdout.strip() or "?"
    return {"pingress": first([str(BIN), "--version"]), "nginx": first(["nginx", "-v"]),
            "lua": f"libnginx-mod-http-lua {lua}",
            "haproxy": first(["haproxy", "-v"]), "caddy": "caddy " + first(["caddy", "version"]),
            "wrk": first(["wrk", "-v"]), "h2load": first(["h2load", "--version"])}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="1 round of 1 s per proxy and scenario")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=8)
    ap.add_argument("--warmup", type=float, default=2,
                    help="seconds of unmeasured load before each measured run (0: none)")
    ap.add_argument("--scenarios", default=",".join(s for s in SCENARIOS if s not in SCALE_ONLY))
    ap.add_argument("--proxies", default=",".join(PROXIES))
    ap.add_argument("--out", default=str(ROOT / "benches" / "results"))
    ap.add_argument("--command", default="benches/load/run")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (configs, logs)")
    args = ap.parse_args()
    if args.smoke:
        args.rounds, args.duration, args.warmup = 1, 1, 0
    scenarios = [s for s in args.scenarios.split(",") if s]
    proxies = [p for p in args.proxies.split(",") if p]
    for s in scenarios:
        if s not in SCENARIOS:
            sys.exit(f"unknown scenario {s}; known: {', '.join(SCENARIOS)}")
    for p in proxies:
        if p not in ALL_PROXIES:
            sys.exit(f"unknown proxy {p}; known: {', '.join(ALL_PROXIES)}")
    if "pingress-b" in proxies and not BIN_B:
        sys.exit("pingress-b needs PINGRESS_BIN_B (the second build to compare)")

    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    d = Path(tempfile.mkdtemp(prefix="pingress-bench-"))
    write_certs(d)
    backend_procs, backends = [], []
    for i in range(2):
        port = free_port()
        backend_procs.append(subprocess.Popen(
            pinned([str(BIN), "echo", "--listen", f"127.0.0.1:{port}", "--name", f"be-{i}"], CLIENT_CPU),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        backends.append(port)
    for p in backends:
        wait_port(p)

    results = {}
    skipped = {}
    try:
        for s in scenarios:
            log(f"== {s}: {SCENARIOS[s][0]}")
            routes = routes_for(s)
            cannot = CANNOT.get(s, {})
            for p in proxies:
                if p in cannot:
                    log(f"   {p}: not measured ({cannot[p]})")
                    skipped.setdefault(s, {})[p] = cannot[p]
            active = [p for p in proxies if p not in cannot]
            runs = {p: [] for p in active}
            for rnd in range(args.rounds):
                # Each round starts with the next proxy: a drift within a round (the VM
                # warming or a neighbour's load) does not always fall on the same one.
                k = rnd % max(len(active), 1)
                for p in active[k:] + active[:k]:
                    pd = d / f"{s}-{p}"
                    pd.mkdir(exist_ok=True)
                    proxy = Proxy(p, pd, routes, [backends[0]], d, s)
                    proxy.collector = backends[1]
                    try:
                        proxy.start()
                        r = measure(pd, proxy, s, args.duration, backends, args.warmup)
                    finally:
                        proxy.stop()
                    runs[p].append(r)
                    log(f"   round {rnd + 1} {p:13} {r['rps']:9.0f} req/s  cpu {r['cpu_us_per_req'] or 0:6.1f} us/req"
                        f"  p99 {r['p99_ms']:7.2f} ms  errors {r['errors']}")
            results[s] = {}
            for p, rs in runs.items():
                agg = {k: median_of(rs, k) for k in
                       ["rps", "p50_ms", "p99_ms", "p999_ms", "cpu_us_per_req", "rss_peak_kib"]}
                agg["errors"] = sum(r["errors"] for r in rs)
                agg["requests"] = sum(r["requests"] for r in rs)
                if "changes" in rs[0]:
                    agg["changes"] = sum(r["changes"] for r in rs)
                if "slow_opened" in rs[0]:
                    for k in ["slow_close_p50_s", "slow_close_max_s", "normal_success_pct",
                              "rss_before_kib", "rss_attack_max_kib"]:
                        agg[k] = median_of(rs, k)
                    agg["slow_opened"] = sum(r["slow_opened"] for r in rs)
                    agg["slow_closed"] = sum(r["slow_closed"] for r in rs)
                agg["rounds"] = rs
                results[s][p] = agg
        memory = idle_and_10k_rss(d, [backends[0]]) if "pingress" in proxies else {}
    finally:
        for b in backend_procs:
            b.terminate()
        if not args.keep:
            shutil.rmtree(d, ignore_errors=True)
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": args.command + (" --smoke" if args.smoke else ""),
        "rounds": args.rounds, "duration_s": args.duration, "warmup_s": args.warmup,
        "machine": machine(), "versions": versions(),
        "scenarios": {s: SCENARIOS[s][0] for s in scenarios},
        "results": results, "pingress_memory": memory, "not_measured": skipped,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = "smoke" if args.smoke else "latest"
    (out / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / f"{name}.md").write_text(markdown(report))
    (out / f"{name}.svg").write_text(svg(report))
    (out / f"{name}-compact.md").write_text(compact(report))
    print(markdown(report))
    log(f"wrote {out}/{name}.json, .md, .svg")
    failed = [(s, p) for s, r in results.items() for p, a in r.items() if a["requests"] == 0]
    if failed:
        sys.exit(f"no requests completed for {failed}")


def markdown(rep):
    m = rep["machine"]
    lines = [
        f"Run {rep['date']}: `{rep['command']}` ({rep['rounds']} interleaved rounds x "
        f"{rep['duration_s']:g} s per proxy and scenario, each after {rep.get('warmup_s', 0):g} s of"
        " unmeasured warm-up; medians).",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory']}, Linux {m['kernel']}; {m['pinning']}.",
        "Versions: " + "; ".join(f"{v}" for v in rep["versions"].values()) + ".",
        "",
        "CPU and p99 are also given relative to the ingress-nginx-equivalent peer (`vs ing`) and to plain"
        " nginx (`vs nginx`): below 1.0 is cheaper or faster.",
        "",
    ]
    header = ["| scenario | proxy | req/s | p50 ms | p99 ms | p99.9 ms | CPU us/req | CPU vs ing | CPU vs nginx "
              "| p99 vs ing | p99 vs nginx | peak RSS MiB | errors |",
              "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    family = {s: name for name, scen in FAMILIES for s in scen}
    current = None

    def rel(by, p, base, key):
        b = (by.get(base) or {}).get(key)
        v = (by.get(p) or {}).get(key)
        return f"{v / b:.2f}" if b and v else "-"
    order = {s: i for i, (_, scen) in enumerate(FAMILIES) for s in scen}
    for s, by in sorted(rep["results"].items(), key=lambda kv: order.get(kv[0], len(FAMILIES))):
        if family.get(s, "Other") != current:
            current = family.get(s, "Other")
            lines += ["", f"**{current}**", ""] + header
        for p, a in by.items():
            extra = f" ({a['changes']} changes)" if "changes" in a else ""
            if "slow_opened" in a:
                extra = (f" (slowloris: {a['slow_closed']} of {a['slow_opened']} closed, after "
                         f"{a['slow_close_p50_s'] or 0:.1f} s median, {a['slow_close_max_s'] or 0:.1f} s max; "
                         f"normal client {a['normal_success_pct']:.2f}% ok; RSS "
                         f"{a['rss_before_kib'] / 1024:.1f} -> {a['rss_attack_max_kib'] / 1024:.1f} MiB)")
            a = {k: (0 if v is None else v) for k, v in a.items()}
            lines.append(
                f"| {s} | {p} | {a['rps']:.0f} | {a['p50_ms']:.2f} | {a['p99_ms']:.2f} | {a['p999_ms']:.2f} | "
                f"{a['cpu_us_per_req']:.1f} | {rel(by, p, 'ingress-nginx-eq', 'cpu_us_per_req')} | "
                f"{rel(by, p, 'nginx', 'cpu_us_per_req')} | {rel(by, p, 'ingress-nginx-eq', 'p99_ms')} | "
                f"{rel(by, p, 'nginx', 'p99_ms')} | {a['rss_peak_kib'] / 1024:.1f} | {a['errors']}{extra} |")
    lines += paired(rep)
    if rep.get("pingress_memory"):
        mem = rep["pingress_memory"]
        lines.append("")
        lines.append(
            f"pingress memory: idle RSS {mem['idle']['rss_kib'] / 1024:.1f} MiB; with 10,000 Ingresses "
            f"loaded {mem['10k_ingresses']['rss_kib'] / 1024:.1f} MiB (peak "
            f"{mem['10k_ingresses']['rss_peak_kib'] / 1024:.1f} MiB).")
    for s, by in rep.get("not_measured", {}).items():
        lines.append("")
        lines.append(f"Not measured in `{s}`: " + "; ".join(f"{p} ({why})" for p, why in by.items()) + ".")
    lines.append("")
    lines.append("Scenarios: " + "; ".join(f"`{s}` {d}" for s, d in rep["scenarios"].items()) + ".")
    return "\n".join(lines) + "\n"


def paired(rep):
    """pingress (and pingress-b) over the Pingora floor, round by round: each round runs the
    proxies back to back, so the ratio within a round leaves out most of the drift between
    rounds that the medians of each proxy keep (on this VM the rounds of one proxy spread
    20-70 %). Given as the median of the rounds' ratios and its quartiles."""
    rows = []
    for s, by in rep["results"].items():
        floor = by.get("pingora-floor")
        for p in ("pingress", "pingress-b"):
            if not floor or p not in by:
                continue
            cells = [p, s]
            for key in ("cpu_us_per_req", "p99_ms"):
                ratios = sorted(a[key] / b[key] for a, b in zip(by[p]["rounds"], floor["rounds"])
                                if a.get(key) and b.get(key))
                if not ratios:
                    cells.append("-")
                    continue
                q = statistics.quantiles(ratios, n=4, method="inclusive") if len(ratios) > 1 else ratios * 3
                cells.append(f"{q[1]:.3f} ({q[0]:.2f}-{q[2]:.2f})")
            rows.append(f"| {cells[1]} | {cells[0]} | {cells[2]} | {cells[3]} | {len(floor['rounds'])} |")
    if not rows:
        return []
    return ["", "**Over the Pingora floor, paired by round** (the median of each round's ratio, "
            "with its quartiles: a round runs the proxies back to back)", "",
            "| scenario | proxy | CPU/req ratio | p99 ratio | rounds |",
            "| --- | --- | ---: | ---: | ---: |"] + rows


def compact(rep):
    """The README's tables: one per family, a row per scenario, CPU us/req and p99 ms of every
    proxy side by side."""
    proxies = sorted({p for by in rep["results"].values() for p in by}, key=ALL_PROXIES.index)
    m = rep["machine"]
    out = [f"Run {rep['date']} on {m['cpu']}, {m['cores']} cores ({m['pinning']}): `{rep['command']}`. "
           "Each cell: proxy CPU per request in us / p99 in ms (medians of interleaved rounds); "
           "`-` not measured.", ""]
    for name, scen in FAMILIES:
        rows = [s for s in scen if s in rep["results"]]
        if not rows:
            continue
        out += [f"**{name}**", "", "| scenario | " + " | ".join(proxies) + " |",
                "| --- |" + " ---: |" * len(proxies)]
        for s in rows:
            cells = []
            for p in proxies:
                a = rep["results"][s].get(p)
                cells.append(f"{a['cpu_us_per_req'] or 0:.1f} / {a['p99_ms'] or 0:.1f}" if a else "-")
            out.append(f"| {s} | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def svg(rep):
    """Grouped bar charts of CPU per request and p99, relative to the ingress-nginx-equivalent
    peer and to plain nginx (1.0 = that peer), so scenarios of very different cost share one
    axis; the absolute value is printed on each bar."""
    colors = {"pingress": "#d9480f", "ingress-nginx-eq": "#5f3dc4", "nginx": "#2b8a3e",
              "haproxy": "#1864ab", "caddy": "#0b7285", "pingora-floor": "#868e96",
              "pingress-b": "#f08c00"}
    scen = list(rep["results"])
    proxies = sorted({p for by in rep["results"].values() for p in by}, key=ALL_PROXIES.index)
    bases = [b for b in ["ingress-nginx-eq", "nginx"] if b in proxies] or proxies[:1]
    bar, gap, left, top, ch = 26, 26, 60, 50, 230
    group = bar * len(proxies) + gap
    width = left + group * len(scen) + 30
    charts = [(key, unit, base, f"{what}, relative to {base} (lower is better)")
              for key, unit, what in [("cpu_us_per_req", "us", "proxy CPU per request"),
                                      ("p99_ms", "ms", "p99 latency")]
              for base in bases]
    height = len(charts) * (ch + 120) + 50
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'font-family="sans-serif" font-size="11">',
             f'<rect width="{width}" height="{height}" fill="white"/>']
    for ci, (key, unit, base, title) in enumerate(charts):
        y0 = top + ci * (ch + 120)
        ratios = {}
        for s_ in scen:
            b = rep["results"][s_].get(base, {}).get(key) or 0
            for p in proxies:
                v = (rep["results"][s_].get(p) or {}).get(key) or 0
                ratios[(s_, p)] = (v / b if b else 0, v)
        vmax = max([r for r, _ in ratios.values()] + [1.0]) * 1.15
        parts.append(f'<text x="{left}" y="{y0 - 18}" font-size="14" font-weight="bold">{title}</text>')
        for t in range(5):
            v = vmax * t / 4
            y = y0 + ch - ch * t / 4
            parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{width - 20}" y2="{y:.1f}" stroke="#e5e5e5"/>')
            parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{v:.2f}x</text>')
        y1 = y0 + ch - ch / vmax
        parts.append(f'<line x1="{left}" y1="{y1:.1f}" x2="{width - 20}" y2="{y1:.1f}" stroke="#888" stroke-dasharray="4 3"/>')
        for si, s_ in enumerate(scen):
            gx = left + 10 + si * group
            for pi, p in enumerate(proxies):
                r, v = ratios[(s_, p)]
                h = ch * r / vmax
                x = gx + pi * bar
                parts.append(f'<rect x="{x}" y="{y0 + ch - h:.1f}" width="{bar - 3}" height="{h:.1f}" '
                             f'fill="{colors[p]}"><title>{s_} {p}: {v:.2f} {unit}</title></rect>')
                parts.append(f'<text x="{x + (bar - 3) / 2:.1f}" y="{y0 + ch - h - 3:.1f}" font-size="8" '
                             f'text-anchor="middle">{v:.3g}</text>')
            cx = gx + bar * len(proxies) / 2
            parts.append(f'<text x="{cx:.0f}" y="{y0 + ch + 14}" text-anchor="end" '
                         f'transform="rotate(-30 {cx:.0f},{y0 + ch + 14})">{s_}</text>')
    for pi, p in enumerate(proxies):
        x = left + pi * 110
        y = height - 18
        parts.append(f'<rect x="{x}" y="{y - 10}" width="12" height="12" fill="{colors[p]}"/>'
                     f'<text x="{x + 16}" y="{y}">{p}</text>')
    parts.append(f'<text x="{left + len(proxies) * 110}" y="{height - 18}">bar labels: absolute '
                 f'(CPU in us per request, p99 in ms)</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


if __name__ == "__main__":
    main()
