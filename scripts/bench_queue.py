#!/usr/bin/env python3
"""The deploy queue under load and faults (issue: holds under load and faults).

Starts one `berth serve` on port 0 (loopback only) and reproduces four measurements:
  hanging  two deploys whose apps never answer their health check, then a static deploy of
           another site: how long it takes beside them, against the same deploy alone;
  burst    20 deploys queued to one site (each with a 1 s build), then another site's
           deploy: how many of the 20 built, and how long the other site waited;
  prune    51 deploys of a 1 MB app: deployment folders and bytes left on disk;
  crash    a live Node app that crashes 10 s after going live: how long the site answers
           errors before berth rolls back to the deployment that stayed healthy.
Bounded in time (each part has a deadline). Prints Markdown rows for BENCHMARKS.md.
Usage: scripts/bench_queue.py [--binary target/release/berth] [--parts hanging,burst,prune,crash]
"""
import argparse, os, statistics, time
from benchlib import Berth, http

NODE_OK = "require('http').createServer((q, r) => r.end('ok')).listen(process.env.PORT);\n"


def wait_status(b, deployment_id, statuses, deadline_s=180):
    end = time.time() + deadline_s
    while time.time() < end:
        status, d = b.call("GET", f"/api/deployments/{deployment_id}")
        if status == 200 and d["status"] in statuses:
            return d
        time.sleep(0.05)
    raise SystemExit(f"deployment {deployment_id} never reached {statuses}")


def upload_nowait(b, site, files):
    from benchlib import tarball
    status, out = b.call("POST", f"/api/sites/{site}/upload?create=true", raw=tarball(files))
    assert status in (201, 202), out
    return out["deployment"]["id"]


def timed_static(b, site, n=5):
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        b.upload(site, {"index.html": f"<p>{site} {i}</p>"})
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def part_hanging(b):
    b.upload("alone", {"index.html": "first"})
    alone = timed_static(b, "alone")
    hanging = []
    for name in ("hang-one", "hang-two"):
        hanging.append(upload_nowait(b, name, {"package.json": '{"scripts":{"start":"sleep 600"}}'}))
    for d in hanging:
        wait_status(b, d, {"deploying"}, 60)
    beside = timed_static(b, "alone")
    for d in hanging:
        b.call("POST", f"/api/deployments/{d}/cancel")
    return [("static deploy alone → beside two apps hanging in their health check (median of 5)",
             f"{alone * 1000:.0f} ms → {beside * 1000:.0f} ms")]


def part_burst(b):
    app = {"package.json": '{"scripts":{"build":"sleep 1","start":"node server.js"}}', "server.js": NODE_OK}
    b.upload("other", app)
    t0 = time.perf_counter()
    b.upload("other", app)
    other_alone = time.perf_counter() - t0
    b.upload("burst", app)
    ids = [upload_nowait(b, "burst", app | {"n.txt": str(i)}) for i in range(20)]
    t0 = time.perf_counter()
    b.upload("other", app)
    other_behind = time.perf_counter() - t0
    finals = [wait_status(b, d, {"live", "failed", "cancelled", "superseded"}) for d in ids]
    built = sum(1 for d in finals if d["status"] != "superseded")
    return [("20 deploys queued to one site: builds run", f"{built} of 20 ({20 - built} superseded)"),
            ("another site's deploy (1 s build): alone → behind the 20", f"{other_alone:.1f} s → {other_behind:.1f} s")]


def part_prune(b):
    blob = os.urandom(512 * 1024).hex()  # 1 MB of text
    for i in range(51):
        b.upload("prune", {"index.html": f"<p>{i}</p>", "blob.txt": blob})
    folders = os.path.join(b.data, "deployments")
    ids = [d for d in os.listdir(folders)] if os.path.isdir(folders) else []
    size = 0
    for root, _, files in os.walk(folders):
        for f in files:
            p = os.path.join(root, f)
            if not os.path.islink(p):
                size += os.path.getsize(p)
    return [("51 deploys of a 1 MB app: deployment folders kept, bytes on disk",
             f"{len(ids)} folders, {size / (1 << 20):.0f} MB")]


def part_crash(b):
    b.upload("crashy", {"package.json": '{"scripts":{"start":"node server.js"}}', "server.js": NODE_OK})
    crashing = ("require('http').createServer((q, r) => r.end('new')).listen(process.env.PORT);\n"
                "setTimeout(() => process.exit(1), 10000);\n")
    b.upload("crashy", {"package.json": '{"scripts":{"start":"node server.js"}}', "server.js": crashing})
    first_error, down, last = None, 0.0, time.time()
    end = time.time() + 300
    while time.time() < end:
        status, body = b.edge("crashy", timeout=5)
        now = time.time()
        if status != 200:
            first_error = first_error or now
            down += now - last
        last = now
        if first_error and status == 200 and body == b"ok":
            return [("a live app crashing 10 s after each start: from its first crash until berth rolled back "
                     "(the app served between crashes)", f"{now - first_error:.1f} s, of which {down:.1f} s answered errors")]
        time.sleep(0.1)
    return [("a live app crashing 10 s after go-live", "still down after 300 s")]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default=os.path.join(os.path.dirname(__file__), "..", "target", "release", "berth"))
    ap.add_argument("--parts", default="hanging,burst,prune,crash")
    a = ap.parse_args()
    parts = {"hanging": part_hanging, "burst": part_burst, "prune": part_prune, "crash": part_crash}
    rows = []
    for name in a.parts.split(","):
        # The burst keeps every deployment so each one's outcome can be read afterwards.
        b = Berth(a.binary, args=["--keep-deployments", "50"] if name == "burst" else [])
        try:
            rows += parts[name](b)
        finally:
            b.stop()
    print("| measure | result |\n| --- | --- |")
    for m, r in rows:
        print(f"| {m} | {r} |")


if __name__ == "__main__":
    main()
