#!/usr/bin/env python3
"""Deploy-to-first-200 and idle-memory benchmarks for berth.

Starts a release `berth serve` on port 0 in a temp data dir, then:
  * idle: resident memory (VmRSS) of the idle server after it settles;
  * static / node: N times, uploads a fresh app to a new site and measures from the
    upload call until the first 200 answered by the edge for that site's host.
Prints a Markdown table for BENCHMARKS.md. Usage: scripts/bench_deploy.py [--runs 10]
"""
import argparse, json, os, statistics, subprocess, sys, tempfile, time
from benchlib import http, tarball

KEY = "berth_bench_admin_key"


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
    data = tempfile.mkdtemp(prefix="berth-bench-")
    env = dict(os.environ, BERTH_BOOTSTRAP_KEY=KEY, BERTH_LOG="warn")
    proc = subprocess.Popen(
        [args.binary, "serve", "--data", data, "--listen", "127.0.0.1:0", "--edge-listen", "127.0.0.1:0"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        ports_file = os.path.join(data, "ports.json")
        while not os.path.exists(ports_file):
            time.sleep(0.02)
        time.sleep(0.05)
        ports = json.load(open(ports_file))
        api, edge = f"http://127.0.0.1:{ports['api']}", f"http://127.0.0.1:{ports['edge']}"
        while http("GET", api + "/healthz")[0] != 200:
            time.sleep(0.02)
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
        print(f"| measure | result | target |")
        print(f"| --- | --- | --- |")
        print(f"| idle `berth serve` RSS | {rss_kb / 1024:.1f} MB | ≤ 40 MB |")
        for kind, target in (("static", "≤ 300 ms"), ("node", "≤ 1500 ms")):
            s = results[kind]
            print(f"| deploy → first 200, {kind} (median of {len(s)}) | {statistics.median(s):.0f} ms "
                  f"(min {min(s):.0f}, max {max(s):.0f}) | {target} |")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


if __name__ == "__main__":
    main()
