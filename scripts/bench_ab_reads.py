#!/usr/bin/env python3
"""Single reads on Postgres, two binaries interleaved on one database.

Run-to-run noise on a small machine is larger than a change to one read's cost, so this
fills one database once (N sites through binary A, the first 100 with a live static
deployment) and then alternates the binaries over the same data, round after round: each
round starts one binary on the data, takes `--samples` sequential `GET /api/sites/{site}`
(random sites) and `GET /api/sites/{live site}` over one keep-alive connection after a
warm-up, and stops it. Prints p50/p99 per binary over all rounds.
Usage: scripts/bench_ab_reads.py --postgres URL --a BINARY --b BINARY [--sites 10000]
       [--rounds 4] [--samples 300]
"""
import argparse, json, os, random, shutil, statistics, subprocess, sys, tempfile, time
from benchlib import KEY, PostgresDatabase, http, tarball
from bench_scale import Conn, fill, pct


def start(binary, data, url):
    env = dict(os.environ, BERTH_BOOTSTRAP_KEY=KEY, BERTH_LOG="warn", BERTH_DATABASE_URL=url)
    ports = os.path.join(data, "ports.json")
    if os.path.exists(ports):
        os.remove(ports)
    proc = subprocess.Popen([binary, "serve", "--data", data, "--listen", "127.0.0.1:0",
                             "--edge-listen", "127.0.0.1:0"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(3000):
        if os.path.exists(ports):
            break
        time.sleep(0.02)
    time.sleep(0.05)
    api = f"http://127.0.0.1:{json.load(open(ports))['api']}"
    for _ in range(3000):
        if http("GET", api + "/healthz")[0] == 200:
            break
        time.sleep(0.02)
    return proc, api


def reads(api, names, live, samples):
    conn = Conn(api)
    rng = random.Random(7)
    out = {"random": [], "live": []}
    for _ in range(50):
        conn.request("GET", f"/api/sites/{rng.choice(names)}")
    for _ in range(samples):
        for kind, name in (("random", rng.choice(names)), ("live", rng.choice(live))):
            status, body, secs, _ = conn.request("GET", f"/api/sites/{name}")
            if status != 200:
                sys.exit(f"GET {name}: {status} {body[:200]!r}")
            out[kind].append(secs * 1000)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--postgres", required=True)
    ap.add_argument("--a", required=True)
    ap.add_argument("--b", required=True)
    ap.add_argument("--sites", type=int, default=10000)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--samples", type=int, default=300)
    args = ap.parse_args()
    db = PostgresDatabase(args.postgres, f"bench_ab_{os.getpid()}")
    data = tempfile.mkdtemp(prefix="berth-bench-ab-")
    try:
        proc, api = start(args.a, data, db.url)
        fill(api, 0, args.sites, 8)
        names = [f"s{i:05d}" for i in range(args.sites)]
        live = names[:100]
        for name in live:
            conn = Conn(api)
            status, body, _, _ = conn.request("POST", f"/api/sites/{name}/upload?wait=true",
                                              raw=tarball({"index.html": f"<p>{name}</p>"}))
            if status != 202:
                sys.exit(f"upload {name}: {status} {body[:200]!r}")
        proc.terminate(); proc.wait(timeout=30)
        results = {"A": {"random": [], "live": []}, "B": {"random": [], "live": []}}
        for r in range(args.rounds):
            for label, binary in (("A", args.a), ("B", args.b)) if r % 2 == 0 else (("B", args.b), ("A", args.a)):
                proc, api = start(binary, data, db.url)
                got = reads(api, names, live, args.samples)
                proc.terminate(); proc.wait(timeout=30)
                for kind in got:
                    results[label][kind] += got[kind]
                print(f"round {r} {label}: random p50 {statistics.median(got['random']):.2f} "
                      f"p99 {pct(got['random'], 99):.2f}; live p50 {statistics.median(got['live']):.2f} "
                      f"p99 {pct(got['live'], 99):.2f} ms", flush=True)
        print("| binary | `GET /api/sites/{site}` random (p50 / p99) | a live site (p50 / p99) |")
        print("| --- | --- | --- |")
        for label, binary in (("A", args.a), ("B", args.b)):
            r = results[label]
            print(f"| {label} ({os.path.basename(binary)}) | {statistics.median(r['random']):.2f} / "
                  f"{pct(r['random'], 99):.2f} ms | {statistics.median(r['live']):.2f} / {pct(r['live'], 99):.2f} ms |")
    finally:
        db.drop()
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
