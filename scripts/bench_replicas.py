#!/usr/bin/env python3
"""Replicas on one Postgres: how fast a route change reaches the other replica's edge, and
what an idle berth holds in memory on each database.

Needs a Postgres server (`--postgres URL`, e.g. the one scripts/postgres-test-env.sh starts;
a fresh database is made there and dropped afterwards). Loopback only. Parts:
  idle    resident memory (VmRSS) of one idle `berth serve` on SQLite and of one on Postgres,
          `--idle-seconds` after it answered (its loops running, nothing to do);
  routes  replicas A and B on one database and a site made through A; then `--changes`
          custom domains added through A, one at a time: the time from A's answer until
          B's edge answers for the domain (B's edge learns it from the event bus, not from
          its periodic reconcile pass), and the same for removing each.
Prints Markdown rows for BENCHMARKS.md. Every wait has a deadline.
Usage: scripts/bench_replicas.py --postgres URL [--binary PATH] [--changes 20] [--parts idle,routes]
"""
import argparse, os, statistics, subprocess, time
from benchlib import Berth, PostgresDatabase, http

MASTER_KEY = "5eb9c0a1d2e3f40516273849aabbccddeeff00112233445566778899aabbccdd"
DEADLINE = 30


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        return int([l for l in f if l.startswith("VmRSS")][0].split()[1]) / 1024


def pct(samples, p):
    s = sorted(samples)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def edge_answer(b, host):
    """(status, text) of B's edge for `host`."""
    status, out = http("GET", f"http://127.0.0.1:{b.edge_port}/", headers={"Host": host}, timeout=10)
    return status, out.decode(errors="replace")


def until(what, check):
    """Seconds until `check()` holds, polling every millisecond."""
    t0 = time.perf_counter()
    while not check():
        if time.perf_counter() - t0 > DEADLINE:
            raise SystemExit(f"timed out: {what}")
        time.sleep(0.001)
    return time.perf_counter() - t0


def part_idle(args, database):
    rows = []
    for name, url in (("SQLite", None), ("Postgres", database.url)):
        b = Berth(args.binary, database_url=url)
        try:
            b.call("GET", "/api/whoami")
            time.sleep(args.idle_seconds)
            rows.append((f"idle RSS, one berth on {name} ({args.idle_seconds} s after start)",
                         f"{rss_mb(b.proc.pid):.0f} MB", "small"))
        finally:
            b.stop()
        if url:
            database.psql("DROP SCHEMA public CASCADE; CREATE SCHEMA public", url)
    return rows


def part_routes(args, database):
    env_key = {"BERTH_MASTER_KEY": MASTER_KEY}
    os.environ.update(env_key)
    a = Berth(args.binary, database_url=database.url)
    b = Berth(args.binary, database_url=database.url)
    try:
        status, out = a.call("POST", "/api/sites", {"name": "shared", "deploy": False})
        assert status == 201, out
        added, removed = [], []
        for i in range(args.changes):
            domain = f"d{i}.bench.test"
            assert "No site is deployed" in edge_answer(b, domain)[1]
            status, out = a.call("POST", "/api/sites/shared/domains", {"domain": domain})
            assert status == 201, out
            added.append(until(f"B routes {domain}", lambda: "is attached to a site here" in edge_answer(b, domain)[1]))
            status, out = a.call("DELETE", f"/api/sites/shared/domains/{domain}")
            assert status == 200, (status, out)
            removed.append(until(f"B unroutes {domain}", lambda: "No site is deployed" in edge_answer(b, domain)[1]))
        ms = lambda s: [x * 1000 for x in s]
        return [
            (f"route change reaches the other replica's edge: domain added on A → B answers for it "
             f"(p50 / max of {args.changes})",
             f"{statistics.median(ms(added)):.0f} / {max(ms(added)):.0f} ms", "< 1 s"),
            (f"route change reaches the other replica's edge: domain removed on A → B stops "
             f"(p50 / max of {args.changes})",
             f"{statistics.median(ms(removed)):.0f} / {max(ms(removed)):.0f} ms", "< 1 s"),
            ("two idle replicas on one Postgres, after the changes: RSS of A / B",
             f"{rss_mb(a.proc.pid):.0f} / {rss_mb(b.proc.pid):.0f} MB", "small"),
        ]
    finally:
        a.stop()
        b.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--postgres", required=True, help="a Postgres server URL (a fresh database is made there)")
    target = os.environ.get("CARGO_TARGET_DIR", "target")
    ap.add_argument("--binary", default=f"{target}/release/berth")
    ap.add_argument("--changes", type=int, default=20)
    ap.add_argument("--idle-seconds", type=int, default=30)
    ap.add_argument("--parts", default="idle,routes")
    args = ap.parse_args()
    if not os.path.exists(args.binary):
        subprocess.run(["cargo", "build", "--release"], check=True)
    rows = []
    for part in args.parts.split(","):
        database = PostgresDatabase(args.postgres, f"berth_bench_{part}")
        try:
            rows += {"idle": part_idle, "routes": part_routes}[part](args, database)
        finally:
            database.drop()
    print("| measure | result | target |")
    print("| --- | --- | --- |")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} |")


if __name__ == "__main__":
    main()
