#!/usr/bin/env python3
"""Deploy-to-first-200 and idle-memory benchmarks for berth.

Starts a release `berth serve` on port 0 in a temp data dir, then:
  * idle: resident memory (VmRSS) of the idle server after it settles;
  * static / node: N times, uploads a fresh app to a new site and measures from the
    upload call until the first 200 answered by the edge for that site's host.
Prints a Markdown table for BENCHMARKS.md. Usage: scripts/bench_deploy.py [--runs 10]
"""
import argparse, os, statistics, subprocess, sys, time
from benchlib import KEY, Berth, http, tarball



STATIC = {"index.html": "<h1>bench</h1>"}
NODE = {
    "package.json": '{"name":"b","scripts":{"start":"node server.js"}}',
    "server.js": "require('http').createServer((q,r)=>r.end('ok')).listen(process.env.PORT)",
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--binary", default="target/release/berth")
    args = ap.parse_args()
    if not os.path.exists(args.binary):
        subprocess.run(["cargo", "build", "--release"], check=True)
    b = Berth(args.binary)
    proc = b.proc
    try:
        api, edge = b.api, f"http://127.0.0.1:{b.edge_port}"
        time.sleep(3)
        rss_kb = int([l for l in open(f"/proc/{proc.pid}/status") if l.startswith("VmRSS")][0].split()[1])
        results = {}
        for kind, files in (("static", STATIC), ("node", NODE)):
            body = tarball(files)
            samples = []
            for i in range(args.runs):
                site = f"{kind}-{i}"
                t0 = time.perf_counter()
                status, out = http("POST", f"{api}/api/sites/{site}/upload", body,
                                   {"Authorization": f"Bearer {KEY}", "Content-Type": "application/gzip"})
                assert status == 202, (status, out)
                while True:
                    code, _ = http("GET", edge + "/", headers={"Host": f"{site}.localhost"})
                    if code == 200:
                        break
                    if time.perf_counter() - t0 > 60:
                        sys.exit(f"{site} never served 200")
                    time.sleep(0.002)
                samples.append((time.perf_counter() - t0) * 1000)
            results[kind] = samples
        print("| measure | result | target |")
        print("| --- | --- | --- |")
        print(f"| idle `berth serve` RSS | {rss_kb / 1024:.1f} MB | ≤ 40 MB |")
        for kind, target in (("static", "≤ 300 ms"), ("node", "≤ 1500 ms")):
            s = results[kind]
            print(f"| deploy → first 200, {kind} (median of {len(s)}) | {statistics.median(s):.0f} ms "
                  f"(min {min(s):.0f}, max {max(s):.0f}) | {target} |")
    finally:
        b.stop()


if __name__ == "__main__":
    main()
