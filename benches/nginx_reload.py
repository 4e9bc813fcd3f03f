#!/usr/bin/env python3
"""What one Ingress edit costs ingress-nginx's data plane at N routes, beside
benches/kube_propagation.rs (what it costs pingress).

ingress-nginx renders every Ingress into one nginx.conf and, for a change to any host or
path, checks it (`nginx -t`) and reloads nginx: the master parses the whole file again and
starts new workers, and the old workers stay until their connections end. Endpoint changes
go to its Lua balancer instead, without a reload, so this measures the Ingress-edit path only.

For each N: an nginx.conf with N server blocks (one per Ingress host, each with the location
and headers ingress-nginx's template writes for a plain rule, proxying to one local backend),
then ten edits, one at a time: rename one host, `nginx -t`, `nginx -s reload`, and poll the
new host until it answers. Reports the parse/check time, edit-to-traffic p50/p99, and memory
(PSS, so pages shared between master and workers count once; RSS summed for reference).

Run: python3 benches/nginx_reload.py [--sizes 1000,10000,50000] [--edits 10]
Needs nginx (Debian: nginx-light). Talks only to 127.0.0.1.
"""

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SERVER = """
  server {{
    server_name {host};
    listen 127.0.0.1:{port};
    set $namespace "bench";
    set $ingress_name "i{i}";
    set $service_name "s{i}";
    set $service_port "80";
    location / {{
      set $proxy_upstream_name "bench-s{i}-80";
      proxy_set_header Host $host;
      proxy_set_header X-Request-ID $request_id;
      proxy_set_header X-Real-IP $remote_addr;
      proxy_set_header X-Forwarded-For $remote_addr;
      proxy_set_header X-Forwarded-Host $host;
      proxy_set_header X-Forwarded-Port $server_port;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Scheme $scheme;
      proxy_set_header Connection "";
      proxy_connect_timeout 5s;
      proxy_send_timeout 60s;
      proxy_read_timeout 60s;
      proxy_buffering off;
      proxy_buffer_size 4k;
      proxy_buffers 4 4k;
      proxy_next_upstream error timeout;
      proxy_http_version 1.1;
      proxy_pass http://backend;
    }}
  }}
"""


def write_conf(d, n, port, backend, renamed):
    servers = []
    for i in range(n):
        host = renamed.get(i, f"h{i}.example.com")
        servers.append(SERVER.format(host=host, port=port, i=i))
    conf = f"""
worker_processes 1;
error_log {d}/error.log warn;
pid {d}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  server_names_hash_max_size 262144;
  server_names_hash_bucket_size 128;
  upstream backend {{ server 127.0.0.1:{backend}; keepalive 32; }}
  server {{ listen 127.0.0.1:{backend}; location / {{ return 200 "ok"; }} }}
  server {{ listen 127.0.0.1:{port} default_server; location / {{ return 404; }} }}
{''.join(servers)}
}}
"""
    with open(f"{d}/nginx.conf", "w") as f:
        f.write(conf)


def status(port, host):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/", headers={"Host": host})
    try:
        with urllib.request.urlopen(req, timeout=2) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


def memory(d):
    """(PSS, RSS) in MiB of the master and its workers."""
    master = int(open(f"{d}/nginx.pid").read().strip())
    pids = [master] + [int(p) for p in subprocess.run(
        ["pgrep", "-P", str(master)], capture_output=True, text=True).stdout.split()]
    pss = rss = 0
    for p in pids:
        try:
            for line in open(f"/proc/{p}/smaps_rollup"):
                if line.startswith("Pss:"):
                    pss += int(line.split()[1])
                elif line.startswith("Rss:"):
                    rss += int(line.split()[1])
        except OSError:
            pass
    return pss / 1024, rss / 1024


def pct(v, p):
    v = sorted(v)
    return v[round((len(v) - 1) * p)]


def run(nginx, n, edits):
    d = tempfile.mkdtemp(prefix="nginx-reload-")
    port, backend = free_port(), free_port()
    renamed = {}
    write_conf(d, n, port, backend, renamed)
    t = time.monotonic()
    subprocess.run([nginx, "-p", d, "-c", f"{d}/nginx.conf"], check=True)
    deadline = time.monotonic() + 600
    while status(port, "h0.example.com") != 200:
        if time.monotonic() > deadline:
            sys.exit(f"nginx with {n} servers did not answer")
        time.sleep(0.01)
    start_ms = (time.monotonic() - t) * 1000
    pss, rss = memory(d)
    checks, follows, peaks = [], [], []
    try:
        for e in range(edits):
            i = (e * 7919) % n
            host = f"edited{e}.example.com"
            renamed[i] = host
            t0 = time.monotonic()
            write_conf(d, n, port, backend, renamed)
            t1 = time.monotonic()
            subprocess.run([nginx, "-t", "-q", "-p", d, "-c", f"{d}/nginx.conf"], check=True,
                           capture_output=True)
            t2 = time.monotonic()
            subprocess.run([nginx, "-s", "reload", "-p", d, "-c", f"{d}/nginx.conf"], check=True)
            peak, sampled = 0, 0.0
            while status(port, host) != 200:
                if time.monotonic() - t0 > 600:
                    sys.exit(f"edit {e} never served")
                # Memory every 100 ms: reading smaps of a large process is not free.
                if time.monotonic() - sampled > 0.1:
                    peak = max(peak, memory(d)[0])
                    sampled = time.monotonic()
                time.sleep(0.002)
            t3 = time.monotonic()
            checks.append((t2 - t1) * 1000)
            follows.append((t3 - t1) * 1000)
            peaks.append(max(peak, memory(d)[0]))
            # Let the old worker exit before the next edit, as a quiet cluster would.
            while len(subprocess.run(["pgrep", "-P", open(f"{d}/nginx.pid").read().strip()],
                                     capture_output=True, text=True).stdout.split()) > 1:
                time.sleep(0.01)
        pss_after, rss_after = memory(d)
    finally:
        subprocess.run([nginx, "-s", "stop", "-p", d, "-c", f"{d}/nginx.conf"],
                       capture_output=True)
        time.sleep(0.2)
        shutil.rmtree(d, ignore_errors=True)
    print(f"{n} server blocks: start to first answer {start_ms:.0f} ms; "
          f"memory PSS {pss:.1f} MiB (RSS summed {rss:.1f} MiB)")
    print(f"  nginx -t                 n={edits:<3} p50={pct(checks, .5):8.1f} ms  p99={pct(checks, .99):8.1f} ms")
    print(f"  edit -> traffic (t+reload) n={edits:<3} p50={pct(follows, .5):8.1f} ms  p99={pct(follows, .99):8.1f} ms")
    print(f"  PSS during reload, max   {max(peaks):.1f} MiB; after the edits {pss_after:.1f} MiB "
          f"(RSS summed {rss_after:.1f} MiB)")
    sys.stdout.flush()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1000")
    ap.add_argument("--edits", type=int, default=10)
    a = ap.parse_args()
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.path.exists(nginx):
        sys.exit("nginx not found (Debian: apt-get install nginx-light)")
    for n in [int(s) for s in a.sizes.split(",")]:
        run(nginx, n, a.edits)


if __name__ == "__main__":
    main()
