#!/usr/bin/env python3
"""Lifecycle benchmarks for berth (issue: deployment lifecycle).

Starts a release `berth serve` on port 0 in a temp data dir, then measures:
  * zero-downtime: wrk keeps 2 connections busy on a Node site while 20 redeploys and
    20 promote/rollback switches happen; counts failed requests (non-2xx and socket errors);
  * cold start from zero: a Node site with min_instances 0 is left to sleep, then one
    request is timed; the app's own boot time (node started directly, until its port
    answers) is subtracted (medians of N);
  * dependency cache: first deploy of a Node app with a registry dependency vs a redeploy
    with an unchanged manifest (medians of N).
Prints Markdown rows for BENCHMARKS.md. Usage: scripts/bench_lifecycle.py [--runs 10]
Needs wrk (Debian package) and the npm registry for the cache measure.
"""
import argparse, json, os, re, socket, statistics, subprocess, tempfile, time
from benchlib import Berth, http

def node_files(tag, deps=None):
    pkg = {"name": "b", "version": "1.0.0", "scripts": {"start": "node server.js"}}
    if deps:
        pkg["dependencies"] = deps
    req = "const ms = require('ms');\n" if deps else ""
    return {
        "package.json": json.dumps(pkg),
        "server.js": req + "require('http').createServer((q,r)=>r.end('%s')).listen(process.env.PORT)" % tag,
    }


def zero_downtime(b):
    b.upload("steady", node_files("v0"))
    wrk = subprocess.Popen(["wrk", "-t1", "-c2", "-d60s", "-H", "Host: steady.localhost",
                            f"http://127.0.0.1:{b.edge_port}/"], stdout=subprocess.PIPE, text=True)
    time.sleep(1)
    t0 = time.time()
    for i in range(1, 21):
        b.upload("steady", node_files(f"v{i}"))
    for i in range(20):
        path = "/api/sites/steady/rollback"
        if i % 2:
            _, lst = b.call("GET", "/api/sites/steady/deployments?limit=1")
            status, out = b.call("POST", "/api/sites/steady/promote", {"deployment_id": lst["deployments"][0]["id"]})
        else:
            status, out = b.call("POST", path, {})
        assert status == 200, out
    ops = time.time() - t0
    out, _ = wrk.communicate()
    total = int(re.search(r"(\d+) requests in", out).group(1))
    non2xx = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", out)) else 0
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = sum(int(x) for x in sock.groups()) if sock else 0
    return total, non2xx + errors, ops


def boot_time(runs):
    d = tempfile.mkdtemp()
    open(os.path.join(d, "server.js"), "w").write(node_files("x")["server.js"])
    samples = []
    for _ in range(runs):
        s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
        t0 = time.perf_counter()
        p = subprocess.Popen(["node", "server.js"], cwd=d, env=dict(os.environ, PORT=str(port)))
        while http("GET", f"http://127.0.0.1:{port}/", timeout=2)[0] != 200:
            time.sleep(0.002)
        samples.append((time.perf_counter() - t0) * 1000)
        p.kill(); p.wait()
    return samples


def cold_start(b, runs):
    b.upload("sleepy", node_files("awake"))
    status, out = b.call("PATCH", "/api/sites/sleepy/scaling", {"min_instances": 0, "idle_timeout_seconds": 5})
    assert status == 200, out
    samples = []
    for _ in range(runs):
        while b.call("GET", "/api/sites/sleepy/scaling")[1]["running_instances"] != 0:
            time.sleep(0.2)
        t0 = time.perf_counter()
        code, _ = b.edge("sleepy")
        assert code == 200, code
        samples.append((time.perf_counter() - t0) * 1000)
    return samples


def cache(b, runs):
    first, again = [], []
    for i in range(runs):
        site = f"deps-{i}"
        t0 = time.perf_counter()
        b.upload(site, node_files("d0", {"ms": "2.1.3"}))
        first.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        b.upload(site, node_files("d1", {"ms": "2.1.3"}))
        again.append((time.perf_counter() - t0) * 1000)
    return first, again


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--binary", default="target/release/berth")
    args = ap.parse_args()
    if not os.path.exists(args.binary):
        subprocess.run(["cargo", "build", "--release"], check=True)
    b = Berth(args.binary)
    try:
        total, failed, ops = zero_downtime(b)
        boot = boot_time(args.runs)
        cold = cold_start(b, args.runs)
        first, again = cache(b, args.runs)
    finally:
        b.stop()
    med = statistics.median
    print("| measure | result | target |")
    print("| --- | --- | --- |")
    print(f"| failed requests during 20 redeploys + 20 promote/rollback switches (wrk -c2, {total} requests, ops took {ops:.1f} s) | {failed} | 0 |")
    print(f"| cold start from zero: first request (median of {len(cold)}) | {med(cold):.0f} ms | |")
    print(f"| Node's own boot until its port answers (median of {len(boot)}) | {med(boot):.0f} ms | |")
    print(f"| cold start overhead (first request − boot) | {med(cold) - med(boot):.0f} ms | ≤ 50 ms |")
    print(f"| deploy with a registry dependency, first (median of {len(first)}) | {med(first):.0f} ms | |")
    print(f"| redeploy, unchanged manifest (cache hit, median of {len(again)}) | {med(again):.0f} ms | |")
    print(f"| speed-up | {med(first) / med(again):.1f}× | ≥ 5× |")


if __name__ == "__main__":
    main()
