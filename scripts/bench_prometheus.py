#!/usr/bin/env python3
"""Cost of a `GET /metrics` scrape: N static sites, each with traffic through the edge (so
every site has its edge series), then M scrapes with the operator's scrape token, timed one
after the other. Prints the response size, the number of samples and p50 / p95 / max time.

Usage: scripts/bench_prometheus.py [BINARY] [--sites N] [--scrapes M]
(BINARY defaults to target/release/berth.)"""
import argparse, os, statistics, sys, time

sys.path.insert(0, os.path.dirname(__file__))
from benchlib import Berth, http  # noqa: E402

TOKEN = "bench-scrape-token-0123456789abcdef"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary", nargs="?", default="target/release/berth")
    ap.add_argument("--sites", type=int, default=100)
    ap.add_argument("--scrapes", type=int, default=50)
    args = ap.parse_args()
    os.environ["BERTH_METRICS_TOKEN"] = TOKEN
    berth = Berth(args.binary)
    try:
        for i in range(args.sites):
            berth.upload(f"s{i:03}", {"index.html": f"<h1>site {i}</h1>"})
            for _ in range(3):
                assert berth.edge(f"s{i:03}")[0] == 200
        headers = {"Authorization": f"Bearer {TOKEN}"}
        # Until the tap's last flush (every 2 s) has named every site.
        deadline = time.time() + 30
        while True:
            status, body = http("GET", berth.api + "/metrics", headers=headers)
            assert status == 200, body[:200]
            text = body.decode()
            if all(f'site="s{i:03}"' in text for i in range(args.sites)):
                break
            assert time.time() < deadline, "not every site has its series"
            time.sleep(0.5)
        times, sizes = [], []
        for _ in range(args.scrapes):
            start = time.perf_counter()
            status, body = http("GET", berth.api + "/metrics", headers=headers)
            times.append(time.perf_counter() - start)
            assert status == 200
            sizes.append(len(body))
        samples = sum(1 for line in body.decode().splitlines() if line and not line.startswith("#"))
        times.sort()
        print(f"{args.sites} sites, {args.scrapes} scrapes: {max(sizes)} bytes, {samples} samples; "
              f"p50 {statistics.median(times) * 1000:.1f} ms, "
              f"p95 {times[int(0.95 * (len(times) - 1))] * 1000:.1f} ms, max {times[-1] * 1000:.1f} ms")
    finally:
        berth.stop()


if __name__ == "__main__":
    main()
