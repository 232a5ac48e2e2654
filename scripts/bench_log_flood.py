#!/usr/bin/env python3
"""One app's log flood against the rest of the platform (issue: holds under load).

Starts a release `berth serve` on port 0, deploys a Python app that writes 190-byte lines
to stdout as fast as it can, and for `--seconds` samples berth's resident memory and the
size of its database (+ WAL); meanwhile it times static deploys of another site and
compares them with the same deploys before the flood. After the flood it reports the
database size, the log rows it holds and the flooding environment's stored log bytes
(HOSTING_GET_RESOURCE_USAGE), all bounded by `--log-retention-mb`, which is passed to the
server with `--log-rate`. Loopback only, bounded in time. Prints Markdown rows for
BENCHMARKS.md.
Usage: scripts/bench_log_flood.py [--seconds 20] [--log-retention-mb 5] [--log-rate 1000]
                                  [--binary target/release/berth]
"""
import argparse, os, sqlite3, statistics, time
from benchlib import Berth

FLOOD = {
    "requirements.txt": "# no dependencies\n",
    "app.py": (
        "import os, sys, threading\n"
        "from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer\n"
        "class H(BaseHTTPRequestHandler):\n"
        "    def do_GET(self):\n"
        "        self.send_response(200); self.send_header('content-length', '2'); self.end_headers(); self.wfile.write(b'ok')\n"
        "srv = ThreadingHTTPServer(('0.0.0.0', int(os.environ['PORT'])), H)\n"
        "threading.Thread(target=srv.serve_forever, daemon=True).start()\n"
        "line = 'x' * 190 + '\\n'\n"
        "while True:\n"
        "    sys.stdout.write(line)\n"
    ),
}


def rss_mb(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def db_mb(data):
    return sum(os.path.getsize(os.path.join(data, f)) for f in ("berth.db", "berth.db-wal")
               if os.path.exists(os.path.join(data, f))) / (1 << 20)


def log_rows(data):
    """Log rows in the database, read beside the server (WAL readers do not block it)."""
    db = sqlite3.connect(f"file:{os.path.join(data, 'berth.db')}?mode=ro", uri=True, timeout=10)
    try:
        return db.execute("SELECT COUNT(*) FROM deployment_logs").fetchone()[0]
    finally:
        db.close()


def static_deploys(b, n, tag):
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        b.upload("quiet", {"index.html": f"<p>{tag} {i}</p>"})
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--log-retention-mb", type=int, default=None, help="passed to berth serve")
    ap.add_argument("--log-rate", type=int, default=None, help="passed to berth serve")
    ap.add_argument("--binary", default=os.path.join(os.path.dirname(__file__), "..", "target", "release", "berth"))
    a = ap.parse_args()
    args = []
    if a.log_retention_mb is not None:
        args += ["--log-retention-mb", str(a.log_retention_mb)]
    if a.log_rate is not None:
        args += ["--log-rate", str(a.log_rate)]
    b = Berth(a.binary, args=args)
    try:
        quiet = static_deploys(b, 5, "quiet")
        rss_quiet = rss_mb(b.proc.pid)
        b.upload("flood", FLOOD)
        t0, peak_rss, peak_db, during = time.time(), rss_quiet, 0.0, []
        while time.time() - t0 < a.seconds:
            during.append(static_deploys(b, 1, "flood"))
            peak_rss = max(peak_rss, rss_mb(b.proc.pid))
            peak_db = max(peak_db, db_mb(b.data))
            time.sleep(0.5)
        size, rows = db_mb(b.data), log_rows(b.data)
        peak_db = max(peak_db, size)
        _, usage = b.call("GET", "/api/sites/flood/usage")
        stored = sum(e["bytes"] for e in usage["disk"]["logs"]) / (1 << 20)
        bound = usage["disk"]["log_retention_bytes"] / (1 << 20)
        print("| measure (one app writing 190-byte lines as fast as it can) | value |")
        print("| --- | --- |")
        print(f"| berth resident memory: quiet → peak over {a.seconds} s of flood | {rss_quiet:.0f} MB → {peak_rss:.0f} MB |")
        print(f"| database + WAL after {a.seconds} s of flood (peak) | {size:.1f} MB ({peak_db:.1f} MB) |")
        print(f"| log rows in the database after the flood | {rows:,} |")
        print(f"| the flooding environment's stored log (bound) | {stored:.1f} MiB ({bound:.0f} MiB) |")
        print(f"| static deploy elsewhere, median: quiet → during the flood | {quiet:.0f} ms → {statistics.median(during):.0f} ms |")
    finally:
        b.stop()


if __name__ == "__main__":
    main()
