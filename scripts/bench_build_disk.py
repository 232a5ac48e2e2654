#!/usr/bin/env python3
"""What the build disk costs (issue: safe to run untrusted code, bounded build disk).

Runs `berth serve` as root, where each deployment's build steps write on a size-bounded
ext4 file system of their own (a sparse file, loop-mounted), and deploys two static sites
whose build step writes (a) one small file and (b) a node_modules-sized tree (30,000 files,
150 MB). For each it reports deploy -> first 200 and the two phases the disk adds, from
the server's debug log: making the disk (format, mount, copy the source in) and putting
the result in place (copy out, unmount, remove). Prints Markdown rows for BENCHMARKS.md.
Usage: sudo scripts/bench_build_disk.py [--runs 5] [--binary target/release/berth]
"""
import argparse, json, os, re, statistics, tempfile, time
from benchlib import Berth

SMALL = "mkdir -p dist && echo ok > dist/index.html"
NODE_MODULES = (
    "node -e \"const fs=require('fs');for(let d=0;d<300;d++){fs.mkdirSync('node_modules/p'+d+'/lib',"
    "{recursive:true});for(let f=0;f<100;f++)fs.writeFileSync('node_modules/p'+d+'/lib/f'+f+'.js',"
    "'x'.repeat(5000))}\" && " + SMALL
)


def files(build, tag):
    return {"package.json": json.dumps({"name": "b", "version": tag, "scripts": {"build": build}})}


def phases(log_path):
    ready, result = [], []
    for line in open(log_path):
        line = re.sub(r"\x1b\[[0-9;]*m", "", line)
        m = re.search(r"duration_ms=(\d+)", line)
        if not m:
            continue
        if "build disk ready" in line:
            ready.append(int(m.group(1)))
        elif "build result copied" in line:
            result.append(int(m.group(1)))
    return ready, result


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--binary", default="target/release/berth")
    a = p.parse_args()
    print("| build | deploy → first 200 (median) | disk made, source in | result copied out, disk gone |")
    print("| --- | --- | --- | --- |")
    for name, build in [("small (one file)", SMALL), ("node_modules-sized (30,000 files, 150 MB)", NODE_MODULES)]:
        log = tempfile.mktemp(prefix="berth-bench-log-")
        b = Berth(a.binary, log_filter="warn,berth::runtime::isolation::build_disk=debug", log_path=log)
        try:
            total = []
            for i in range(a.runs + 1):
                t0 = time.perf_counter()
                b.upload("disk", files(build, f"1.0.{i}"))
                status, _ = b.edge("disk")
                assert status == 200, status
                if i > 0:
                    total.append((time.perf_counter() - t0) * 1000)
        finally:
            b.stop()
        ready, result = phases(log)
        os.unlink(log)
        med = lambda xs: statistics.median(xs[1:] or xs)
        print(f"| {name} | {statistics.median(total):.0f} ms | {med(ready):.0f} ms | {med(result):.0f} ms |")


if __name__ == "__main__":
    main()
