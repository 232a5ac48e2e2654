#!/usr/bin/env python3
"""Real-app deploy benchmark: each app of the corpus under tests/apps/ is deployed with no
settings (the folder as the site's source), cold (a new site: empty build cache) and then
warm (the same site deployed again: dependencies and package manager from the cache).

Measures from the deploy call to the first answer below 500 from the edge for the site's
host, and prints a Markdown table for BENCHMARKS.md. Dependencies come from the real
registries, so cold times include the network.
Usage: scripts/bench_real_apps.py [--binary target/debug/berth] [--apps vite-spa,...]
"""
import argparse, os, subprocess, sys, time
from benchlib import Berth, http

APPS = ["yarn-app", "pnpm-app", "vite-spa", "cra-app", "next-export", "next-ssr", "flask-gunicorn", "fastapi-uvicorn",
        "django-static", "go-http", "rust-http", "bun-app", "deno-app"]


def first_answer(b, site, deadline):
    """Polls the edge until the site answers below 500 (bounded by `deadline`)."""
    while time.monotonic() < deadline:
        status, _ = b.edge(site, timeout=10)
        if 0 < status < 500:
            return True
        time.sleep(0.05)
    return False


def deploy(b, site, path, create):
    """One deploy to first answer; returns (seconds, live?, error)."""
    started = time.monotonic()
    if create:
        status, out = b.call("POST", "/api/sites", {"name": site, "repo": path, "wait": True})
    else:
        status, out = b.call("POST", f"/api/sites/{site}/deploy", {"wait": True})
    deployment = (out or {}).get("deployment") or {}
    if deployment.get("status") != "live":
        return time.monotonic() - started, False, deployment.get("error") or f"HTTP {status}: {out}"
    live = first_answer(b, site, started + 300)
    return time.monotonic() - started, live, None if live else "no answer from the edge"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default=os.environ.get("CARGO_TARGET_DIR", "target") + "/debug/berth")
    ap.add_argument("--apps", default=",".join(APPS))
    args = ap.parse_args()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if not os.path.exists(args.binary):
        subprocess.run(["cargo", "build", "--bin", "berth"], check=True, cwd=root)
    # The corpus is deployed from its folders, which the server must be allowed to read.
    b = Berth(args.binary, args=["--allow-local-repos", os.path.join(root, "tests", "apps")])
    rows = []
    try:
        for app in args.apps.split(","):
            path = os.path.join(root, "tests", "apps", app)
            site = app.replace("-", "")
            cold, live, error = deploy(b, site, path, create=True)
            warm, warm_live, warm_error = deploy(b, site, path, create=False) if live else (None, False, None)
            rows.append((app, live, cold, warm if warm_live else None, error or warm_error))
            print(f"{app}: first try {'live' if live else 'FAILED'}; cold {cold:.1f} s"
                  + (f", warm {warm:.1f} s" if warm is not None else ""), file=sys.stderr)
    finally:
        b.stop()
    print("| app | first try | cold deploy | warm deploy |")
    print("| --- | --- | --- | --- |")
    for app, live, cold, warm, error in rows:
        result = "live" if live else f"failed: {error}"
        print(f"| {app} | {result} | {cold:.1f} s | {'—' if warm is None else f'{warm:.1f} s'} |")


if __name__ == "__main__":
    main()
