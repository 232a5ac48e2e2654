#!/usr/bin/env python3
"""Push-to-deploy benchmark for berth's internal git server.

Starts a release `berth serve` on port 0 in a temp data dir, creates an internal repo and a
static site deploying from it, pushes a first commit and waits for it to be served. Then,
N times: commits a one-line change to index.html, runs `git push` over smart HTTP and
measures from the start of `git push` until the edge serves the new content for the
site's host. Prints a Markdown table for BENCHMARKS.md.
Usage: scripts/bench_git_push.py [--runs 10] [--binary target/release/berth]
"""
import argparse, os, statistics, subprocess, sys, tempfile, time
from benchlib import Berth, http

GIT_ENV = dict(
    os.environ,
    GIT_TERMINAL_PROMPT="0",
    GIT_AUTHOR_NAME="bench", GIT_AUTHOR_EMAIL="bench@example.com",
    GIT_COMMITTER_NAME="bench", GIT_COMMITTER_EMAIL="bench@example.com",
)


def git(cwd, *args):
    return subprocess.run(["git", "-c", "credential.helper=", *args], cwd=cwd, env=GIT_ENV,
                          check=True, capture_output=True, text=True).stdout


def api_post(b, path, body):
    status, out = b.call("POST", path, body)
    assert 200 <= status < 300, (path, status, out)
    return out


def wait_for(edge, host, text, t0):
    while True:
        code, body = http("GET", edge + "/", headers={"Host": host})
        if code == 200 and body.decode() == text:
            return
        if time.perf_counter() - t0 > 60:
            sys.exit(f"{host} never served {text!r} (last: {code} {body[:80]!r})")
        time.sleep(0.002)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--binary", default="target/release/berth")
    args = ap.parse_args()
    if not os.path.exists(args.binary):
        subprocess.run(["cargo", "build", "--release"], check=True)
    b = Berth(args.binary)
    try:
        edge = f"http://127.0.0.1:{b.edge_port}"
        api_post(b, "/api/repos", {"name": "bench"})
        api_post(b, "/api/sites", {"name": "bench", "repo": "bench"})
        url = api_post(b, "/api/repos/bench/tokens", {"ttl_seconds": 3600})["push_url"]
        work = tempfile.mkdtemp(prefix="berth-bench-work-")
        git(work, "init", "-q", "-b", "main")
        page = os.path.join(work, "index.html")
        with open(page, "w") as f:
            f.write("v0")
        git(work, "add", "-A")
        git(work, "commit", "-q", "-m", "v0")
        t0 = time.perf_counter()
        git(work, "push", "-q", url, "HEAD:main")
        wait_for(edge, "bench.localhost", "v0", t0)
        samples = []
        for i in range(1, args.runs + 1):
            with open(page, "w") as f:
                f.write(f"v{i}")
            git(work, "commit", "-q", "-am", f"v{i}")
            t0 = time.perf_counter()
            git(work, "push", "-q", url, "HEAD:main")
            wait_for(edge, "bench.localhost", f"v{i}", t0)
            samples.append((time.perf_counter() - t0) * 1000)
        print("| measure | result | target |")
        print("| --- | --- | --- |")
        print(f"| `git push` of a one-line change → new content at the edge, static site (median of {len(samples)}) | "
              f"{statistics.median(samples):.0f} ms (min {min(samples):.0f}, max {max(samples):.0f}) | ≤ 1000 ms |")
    finally:
        b.stop()


if __name__ == "__main__":
    main()
