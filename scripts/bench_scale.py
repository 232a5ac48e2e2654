#!/usr/bin/env python3
"""10,000 sites: listing, reading and creating at scale.

Starts a release `berth serve` on port 0 in a temp data dir (loopback only) and creates N
sites (default 10,000) through `POST /api/sites` over keep-alive connections, several at a
time; the first 100 by name then get a live static deployment, so the first pages carry
deployments as real lists do. On the way it times windows of 100 creations, one after another, at 0, 10 %, 50 % and
the last 100 sites (median and p99 of each window: creation must stay flat as sites grow).
With every site in place it measures:
  * `GET /api/sites?limit=50`: the first page and a deep page (reached by following
    `next_cursor` to the middle of the list), p50/p99 and response size;
  * `GET /api/sites/{site}` of random sites, p50/p99;
  * `GET /api/sites/{site}/deployments?limit=50` and `GET /api/deployments/{id}` of random
    sites/deployments, after D deployments per site (default 10: 100,000 with 10,000 sites)
    are written straight into the database (failed ones, the shape the API lists);
  * MCP `HOSTING_LIST_SITES` (default page) latency and response size;
  * berth's resident memory (VmRSS) before and after a burst of the largest pages.
Prints a Markdown table for BENCHMARKS.md. Every request has a timeout and every loop a
bound. On SQLite by default; `--postgres URL` runs it on a fresh database of that Postgres
server (e.g. scripts/postgres-test-env.sh's), dropped afterwards.
Usage: scripts/bench_scale.py [--sites 10000] [--deployments-per-site 10] [--postgres URL] [--binary PATH]
"""
import argparse, http.client, json, os, random, statistics, subprocess, sys, threading, time
from concurrent.futures import ThreadPoolExecutor
from benchlib import KEY, Berth, PostgresDatabase, tarball

WINDOW = 100
TIMEOUT = 60


def pct(samples, p):
    s = sorted(samples)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        return int([l for l in f if l.startswith("VmRSS")][0].split()[1]) / 1024


class Conn:
    """One keep-alive HTTP connection to the control plane (reopened if the server closes it)."""

    def __init__(self, api):
        self.host, self.port = api.removeprefix("http://").split(":")
        self.conn = None

    def request(self, method, path, body=None, headers=None, raw=None):
        """(status, bytes, seconds, response headers)."""
        hdrs = {"Authorization": f"Bearer {KEY}", **(headers or {})}
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            hdrs["Content-Type"] = "application/json"
        for attempt in range(2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, int(self.port), timeout=TIMEOUT)
            t0 = time.perf_counter()
            try:
                self.conn.request(method, path, data, hdrs)
                r = self.conn.getresponse()
                out = r.read()
                return r.status, out, time.perf_counter() - t0, r.headers
            except (http.client.HTTPException, ConnectionError):
                self.conn.close()
                self.conn = None
                if attempt:
                    raise
        raise RuntimeError("unreachable")


def create(conn, name):
    status, out, secs, _ = conn.request("POST", "/api/sites", {"name": name, "deploy": False})
    if status != 201:
        sys.exit(f"creating {name}: {status} {out[:300]!r}")
    return secs


def fill(api, start, stop, workers):
    """Creates sites start..stop, `workers` at a time, one keep-alive connection each."""
    local = threading.local()

    def one(i):
        if not hasattr(local, "conn"):
            local.conn = Conn(api)
        create(local.conn, f"s{i:05d}")

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, range(start, stop)))


def timed(conn, method, path, runs, body=None, headers=None):
    """Latencies (ms) of `runs` identical calls and the size of the last response."""
    samples, size = [], 0
    for _ in range(runs):
        status, out, secs, _ = conn.request(method, path, body, headers)
        if status != 200:
            sys.exit(f"{method} {path}: {status} {out[:300]!r}")
        samples.append(secs * 1000)
        size = len(out)
    return samples, size


class Mcp:
    """A minimal MCP client over streamable HTTP: initialize, then tools/call."""

    def __init__(self, api):
        self.conn = Conn(api)
        self.session = None
        self.next_id = 0
        self.rpc("initialize", {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "bench_scale", "version": "1"},
        })
        self.conn.request("POST", "/mcp", {"jsonrpc": "2.0", "method": "notifications/initialized"},
                          self.headers())

    def headers(self):
        h = {"Accept": "application/json, text/event-stream"}
        if self.session:
            h["Mcp-Session-Id"] = self.session
        return h

    def rpc(self, method, params):
        """(result, response bytes, seconds)."""
        self.next_id += 1
        body = {"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params}
        status, out, secs, hdrs = self.conn.request("POST", "/mcp", body, self.headers())
        if status != 200:
            sys.exit(f"MCP {method}: {status} {out[:300]!r}")
        self.session = hdrs.get("mcp-session-id", self.session)
        for line in out.decode().splitlines():
            if line.startswith("data:") and line[5:].strip():
                msg = json.loads(line[5:])
                if msg.get("id") == self.next_id:
                    return msg.get("result") or sys.exit(f"MCP {method}: {msg}"), len(out), secs
        sys.exit(f"MCP {method}: no response in {out[:300]!r}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sites", type=int, default=10_000)
    ap.add_argument("--workers", type=int, default=8, help="concurrent creations while filling")
    ap.add_argument("--runs", type=int, default=200, help="samples per read measurement")
    ap.add_argument("--deployments-per-site", type=int, default=10,
                    help="deployments written into the database for every site (10,000 sites x 10 = 100,000)")
    ap.add_argument("--postgres", help="a Postgres server URL: run on a fresh database there instead of SQLite")
    ap.add_argument("--deployed", type=int, default=100,
                    help="sites (the first by name) given a live static deployment, so pages carry one")
    target = os.environ.get("CARGO_TARGET_DIR", "target")
    ap.add_argument("--binary", default=f"{target}/release/berth")
    args = ap.parse_args()
    n = max(args.sites, 2 * WINDOW)
    if not os.path.exists(args.binary):
        subprocess.run(["cargo", "build", "--release"], check=True)
    database = PostgresDatabase(args.postgres, "berth_bench_scale") if args.postgres else None
    b = Berth(args.binary, args=["--keep-deployments", "1000"], database_url=database.url if database else None)
    pid = b.proc.pid
    rows = []
    try:
        conn = Conn(b.api)
        # The key's first use pays its argon2 verification: not part of any measurement.
        conn.request("GET", "/api/whoami")
        rss_start = rss_mb(pid)
        # Creation windows at 0, 10 %, 50 % and the last 100 sites; filled in between.
        t_fill = time.perf_counter()
        created, windows = 0, []
        for at in sorted({0, n // 10, n // 2, n - WINDOW}):
            at = max(at, created)
            if at + WINDOW > n:
                break
            fill(b.api, created, at, args.workers)
            samples = [create(conn, f"s{i:05d}") * 1000 for i in range(at, at + WINDOW)]
            windows.append((at, samples))
            created = at + WINDOW
        fill(b.api, created, n, args.workers)
        fill_secs = time.perf_counter() - t_fill
        # The first pages' sites get a live deployment, as real sites have.
        static = tarball({"index.html": "<h1>scale</h1>"})
        for i in range(min(args.deployed, n)):
            status, out, _, _ = conn.request("POST", f"/api/sites/s{i:05d}/upload?wait=true", raw=static,
                                             headers={"Content-Type": "application/gzip"})
            if status != 202 or json.loads(out)["deployment"]["status"] != "live":
                sys.exit(f"deploying s{i:05d}: {status} {out[:300]!r}")
        # Deployments: D per site, straight into the database (one statement, the same SQL
        # on both engines), as a long-lived installation accumulates them.
        per_site = max(0, args.deployments_per_site)
        t_seed = time.perf_counter()
        seed = f"""
            WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {per_site})
            INSERT INTO deployments (id, org_id, site_id, environment_id, status, source_kind, error,
                                     created_at, started_at, finished_at)
            SELECT 'dep_bench_' || s.name || '_' || n.i, s.org_id, s.id, e.id, 'failed', 'upload',
                   'seeded by bench_scale', 1700000000000 + n.i, 1700000000000 + n.i, 1700000000001 + n.i
            FROM sites s JOIN environments e ON e.site_id = s.id CROSS JOIN n"""
        if per_site:
            if database:
                database.psql(seed, database.url)
            else:
                import sqlite3
                db = sqlite3.connect(os.path.join(b.data, "berth.db"), timeout=60)
                db.execute(seed)
                db.commit()
                db.close()
        seed_secs = time.perf_counter() - t_seed
        for at, s in windows:
            rows.append((f"create a site at {at:,} sites (median / p99 of {WINDOW})",
                         f"{statistics.median(s):.1f} / {pct(s, 99):.1f} ms", "flat"))

        # Reads: the first page, a deep page, one site.
        first, first_size = timed(conn, "GET", "/api/sites?limit=50", args.runs)
        status, out, _, _ = conn.request("GET", "/api/sites?limit=50")
        total = json.loads(out)["total"]
        assert total == n, f"total {total}, expected {n}"
        cursor, seen = None, 0
        for _ in range(n // 200 + 2):
            path = "/api/sites?limit=200" + (f"&cursor={cursor}" if cursor else "")
            status, out, _, _ = conn.request("GET", path)
            page = json.loads(out)
            seen += len(page["sites"])
            cursor = page.get("next_cursor")
            if seen >= n // 2 or not cursor:
                break
        deep, deep_size = timed(conn, "GET", f"/api/sites?limit=50&cursor={cursor}", args.runs)
        def get_sites(count):
            """Latencies (ms) of GET /api/sites/{site} over random sites among the first `count`."""
            samples, size = [], 0
            for _ in range(args.runs):
                status, out, secs, _ = conn.request("GET", f"/api/sites/s{random.randrange(count):05d}")
                assert status == 200, (status, out[:300])
                samples.append(secs * 1000)
                size = len(out)
            return samples, size

        one, one_size = get_sites(n)
        live, live_size = get_sites(max(1, min(args.deployed, n)))
        rows += [
            ("`GET /api/sites?limit=50`, first page (p50 / p99)",
             f"{statistics.median(first):.1f} / {pct(first, 99):.1f} ms, {first_size / 1024:.1f} KB", "p99 < 50 ms"),
            (f"`GET /api/sites?limit=50`, page after {seen:,} sites (p50 / p99)",
             f"{statistics.median(deep):.1f} / {pct(deep, 99):.1f} ms, {deep_size / 1024:.1f} KB", "p99 < 50 ms"),
            ("`GET /api/sites/{site}`, random site (p50 / p99)",
             f"{statistics.median(one):.2f} / {pct(one, 99):.2f} ms, {one_size / 1024:.1f} KB", "p99 < 5 ms"),
            ("`GET /api/sites/{site}`, a site with a live deployment (p50 / p99)",
             f"{statistics.median(live):.2f} / {pct(live, 99):.2f} ms, {live_size / 1024:.1f} KB", "p99 < 5 ms"),
        ]

        if per_site:
            def sample(path_of):
                samples, size = [], 0
                for _ in range(args.runs):
                    status, out, secs, _ = conn.request("GET", path_of())
                    assert status == 200, (status, out[:300])
                    samples.append(secs * 1000)
                    size = len(out)
                return samples, size
            page, page_size = sample(lambda: f"/api/sites/s{random.randrange(n):05d}/deployments?limit=50")
            dep, dep_size = sample(
                lambda: f"/api/deployments/dep_bench_s{random.randrange(n):05d}_{random.randrange(per_site) + 1}")
            rows += [
                (f"`GET /api/sites/{{site}}/deployments?limit=50`, random site ({per_site} each; p50 / p99)",
                 f"{statistics.median(page):.1f} / {pct(page, 99):.1f} ms, {page_size / 1024:.1f} KB", "p99 < 50 ms"),
                (f"`GET /api/deployments/{{id}}`, random of {n * per_site:,} (p50 / p99)",
                 f"{statistics.median(dep):.2f} / {pct(dep, 99):.2f} ms, {dep_size / 1024:.1f} KB", "p99 < 5 ms"),
            ]

        mcp = Mcp(b.api)
        lat, size, text = [], 0, ""
        for _ in range(min(args.runs, 100)):
            result, size, secs = mcp.rpc("tools/call", {"name": "HOSTING_LIST_SITES", "arguments": {}})
            lat.append(secs * 1000)
            text = result["content"][0]["text"]
        rows.append(("MCP `HOSTING_LIST_SITES` (default page; p50 / p99)",
                     f"{statistics.median(lat):.1f} / {pct(lat, 99):.1f} ms, {size / 1024:.1f} KB", "small"))

        # Memory: a burst of the largest pages (200 sites each, the whole list once).
        rss_before = rss_mb(pid)
        cursor, big = None, 0
        for _ in range(n // 200 + 2):
            path = "/api/sites?limit=200" + (f"&cursor={cursor}" if cursor else "")
            status, out, _, _ = conn.request("GET", path)
            big = max(big, len(out))
            cursor = json.loads(out).get("next_cursor")
            if not cursor:
                break
        time.sleep(1)
        rss_after = rss_mb(pid)
        rows += [
            ("largest page (`limit=200`)", f"{big / 1024:.1f} KB", "bounded"),
            ("berth RSS: idle → before the burst → after every page at limit=200",
             f"{rss_start:.0f} → {rss_before:.0f} → {rss_after:.0f} MB", "bounded"),
            (f"fill: {n:,} sites created", f"{fill_secs:.0f} s", ""),
            (f"seed: {n * per_site:,} deployments written", f"{seed_secs:.1f} s", ""),
        ]
        print(f"MCP text: {text[:200]}", file=sys.stderr)
    finally:
        b.stop()
        if database:
            database.drop()
    print("| measure | result | target |")
    print("| --- | --- | --- |")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} |")


if __name__ == "__main__":
    main()
