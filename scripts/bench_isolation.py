#!/usr/bin/env python3
"""What app isolation costs (issue: safe to run untrusted code).

Runs a release `berth serve` twice on port 0: once as an unprivileged user, where berth
cannot confine apps (the plain bubblewrap sandbox on the host network, as before the
isolation work), and once as root, where every instance gets its own host uid, network
namespace and cgroup limits. For each it measures:
  * deploy -> first 200: a dependency-free Node app uploaded with wait=true, then the first
    request through the edge (median of N deploys of new versions);
  * the edge's req/s against one app: wrk, 2 threads, 32 connections, 10 s (after warm-up).
Prints Markdown rows for BENCHMARKS.md. Must run as root.
Usage: scripts/bench_isolation.py [--runs 10] [--binary target/release/berth]
"""
import argparse, json, os, re, statistics, subprocess, time
from benchlib import Berth, tarball

NOBODY = 65534


def node_files(tag):
    return {
        "package.json": json.dumps({"name": "b", "version": "1.0.0", "scripts": {"start": "node server.js"}}),
        "server.js": "require('http').createServer((q,r)=>r.end('%s')).listen(process.env.PORT)" % tag,
    }


def measure(binary, run_as, runs):
    b = Berth(binary, run_as=run_as)
    try:
        samples = []
        for i in range(runs + 1):
            t0 = time.perf_counter()
            out = b.upload("iso", node_files(f"v{i}"))
            status, body = b.edge("iso")
            elapsed = time.perf_counter() - t0
            assert status == 200 and body == f"v{i}".encode(), (status, body, out)
            if i > 0:  # the first deploy pays for a fresh data dir
                samples.append(elapsed * 1000)
        cmd = ["wrk", "-t2", "-c32", "-d10s", "-H", "Host: iso.localhost", f"http://127.0.0.1:{b.edge_port}/"]
        subprocess.run(cmd[:3] + ["-d2s"] + cmd[4:], capture_output=True)
        out = subprocess.run(cmd, capture_output=True, text=True).stdout
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
        return statistics.median(samples), rps
    finally:
        b.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--binary", default=os.path.join(os.path.dirname(__file__), "..", "target", "release", "berth"))
    a = ap.parse_args()
    assert os.geteuid() == 0, "run as root: the confined case needs it"
    plain = measure(a.binary, NOBODY, a.runs)
    confined = measure(a.binary, None, a.runs)
    print("| measure | plain sandbox (host network) | confined (uid, netns, cgroups) | target |")
    print("| --- | --- | --- | --- |")
    print(f"| deploy → first 200, Node app (median of {a.runs}) | {plain[0]:.0f} ms | {confined[0]:.0f} ms "
          f"(+{confined[0] - plain[0]:.0f} ms) | ≤ +50 ms |")
    print(f"| edge req/s against one app (wrk -t2 -c32, 10 s) | {plain[1]:.0f} | {confined[1]:.0f} "
          f"({confined[1] / plain[1]:.2f}×) | ≥ 0.95× |")


if __name__ == "__main__":
    main()
