#!/usr/bin/env python3
"""Docker provider benchmarks for berth (issue: Docker provider).

Prepares the engine and local base images (scripts/docker-test-env.sh), starts a release
`berth serve` on port 0 in a temp data dir with docker as the org's default provider, then
measures:
  * redeploy of an unchanged Dockerfile site (the engine's layer cache hits): from the
    upload until the new container serves behind the edge (`wait=true`), median of N;
  * cold start from zero of a container: a Node site (generated Dockerfile on the local
    berth-test/node:20 image) with min_instances 0 is left to sleep, then one request is
    timed; the app's own boot (node started directly, until its port answers) is
    subtracted (medians of N).
Prints Markdown rows for BENCHMARKS.md. Usage: scripts/bench_docker.py [--runs 10]
Removes its containers, network and images afterwards.
"""
import argparse, os, statistics, subprocess, time
from benchlib import Berth
from bench_lifecycle import boot_time, node_files

HERE = os.path.dirname(os.path.abspath(__file__))

DOCKERFILE_SITE = {
    "Dockerfile": "FROM berth-test/busybox:1\nCOPY index.html /www/index.html\nUSER 65534:65534\n"
                  "CMD [\"/bin/sh\", \"-c\", \"exec httpd -f -p $PORT -h /www\"]\n",
    "index.html": "unchanged",
}


def redeploy_unchanged(b, runs):
    b.upload("boxed", DOCKERFILE_SITE)
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        b.upload("boxed", DOCKERFILE_SITE)
        samples.append((time.perf_counter() - t0) * 1000)
        assert b.edge("boxed")[0] == 200
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


def cleanup(data_dir):
    owner = open(os.path.join(data_dir, "docker-owner")).read().strip()
    label = f"label=berth.owner={owner}"
    ids = subprocess.run(["docker", "ps", "-aq", "--filter", label], capture_output=True, text=True).stdout.split()
    if ids:
        subprocess.run(["docker", "rm", "-f", *ids], capture_output=True)
    networks = subprocess.run(["docker", "network", "ls", "-q", "--filter", label], capture_output=True, text=True).stdout.split()
    if networks:
        subprocess.run(["docker", "network", "rm", *networks], capture_output=True)
    images = set(subprocess.run(["docker", "images", "-q", "--filter", label], capture_output=True, text=True).stdout.split())
    if images:
        subprocess.run(["docker", "rmi", "-f", *images], capture_output=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--binary", default="target/release/berth")
    args = ap.parse_args()
    subprocess.run(["bash", os.path.join(HERE, "docker-test-env.sh")], check=True)
    if not os.path.exists(args.binary):
        subprocess.run(["cargo", "build", "--release"], check=True)
    b = Berth(args.binary)
    try:
        status, out = b.call("PATCH", "/api/config/docker", {"config": {
            "default": True,
            "base_images": {"node": "berth-test/node:20", "procfile": "berth-test/busybox:1"},
        }})
        assert status == 200, out
        redeploy = redeploy_unchanged(b, args.runs)
        boot = boot_time(args.runs)
        cold = cold_start(b, args.runs)
    finally:
        b.stop()
        cleanup(b.data)
    med = statistics.median
    print("| measure | result | target |")
    print("| --- | --- | --- |")
    print(f"| redeploy of an unchanged Dockerfile site until the new container serves (cache hit, median of {len(redeploy)}) | {med(redeploy):.0f} ms | ≤ 2000 ms |")
    print(f"| cold start from zero of a container: first request (median of {len(cold)}) | {med(cold):.0f} ms | |")
    print(f"| Node's own boot until its port answers (median of {len(boot)}) | {med(boot):.0f} ms | |")
    print(f"| container cold start overhead (first request − boot) | {med(cold) - med(boot):.0f} ms | ≤ 300 ms |")


if __name__ == "__main__":
    main()
