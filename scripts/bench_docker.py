#!/usr/bin/env python3
"""Docker provider benchmarks for berth (issue: Docker provider).

Prepares the engine and local base images (scripts/docker-test-env.sh), starts a release
`berth serve` on port 0 in a temp data dir with docker as the org's default provider, then
measures:
  * redeploy of an unchanged Dockerfile site (the engine's layer cache hits): from the
    upload until the new container serves behind the edge (`wait=true`), median of N;
  * wake from the first stage of sleep: a Node site (generated Dockerfile on the local
    berth-test/node:20 image) with min_instances 0 is left idle until the engine reports
    its container paused, then one request is timed (median of N);
  * cold start from zero of a container: the same with keep_paused_seconds 0, so the idle
    container is removed; once the engine has no container of the site left, one request
    is timed; the app's own boot (node started directly, until its port answers) is
    subtracted (medians of N);
  * for context, the engine alone: create + start of a container of the same image with
    the same options, through the Engine API (median of N).
Prints Markdown rows for BENCHMARKS.md. Usage: scripts/bench_docker.py [--runs 10]
Removes its containers, network and images afterwards.
"""
import argparse, http.client, json, os, socket, statistics, subprocess, time
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


def engine_states(b, site):
    """The engine's states of the site's containers (running, paused, exited, ...)."""
    owner = open(os.path.join(b.data, "docker-owner")).read().strip()
    out = subprocess.run(["docker", "ps", "-a", "--filter", f"label=berth.owner={owner}",
                          "--filter", f"label=berth.site={site}", "--format", "{{.State}}"],
                         capture_output=True, text=True, check=True).stdout
    return out.split()


def first_requests(b, site, asleep, runs):
    """Times the first request after each time the site fell asleep (`asleep(states)`)."""
    b.upload(site, node_files("awake"))
    status, out = b.call("PATCH", f"/api/sites/{site}/scaling", {"min_instances": 0, "idle_timeout_seconds": 5})
    assert status == 200, out
    samples = []
    for _ in range(runs):
        while not (b.call("GET", f"/api/sites/{site}/scaling")[1]["running_instances"] == 0
                   and asleep(engine_states(b, site))):
            time.sleep(0.2)
        t0 = time.perf_counter()
        code, _ = b.edge(site)
        assert code == 200, code
        samples.append((time.perf_counter() - t0) * 1000)
    return samples


def paused_memory(b, site):
    """Memory the engine reports for the site's container once it is paused again."""
    while True:
        status, usage = b.call("GET", f"/api/sites/{site}/usage")
        assert status == 200, usage
        instances = usage["instances"]
        if instances and instances[0]["state"] == "paused" and engine_states(b, site) == ["paused"]:
            return instances[0]["memory_bytes"]
        time.sleep(0.5)


def set_keep_paused(b, seconds):
    status, out = b.call("PATCH", "/api/config/docker", {"config": {"keep_paused_seconds": seconds}})
    assert status == 200, out


def engine_alone(runs):
    """create + start of a berth-test/node:20 container on a user network with berth's
    options (no capabilities, no-new-privileges, limits, init), through the Engine API."""
    sock = "/var/run/docker.sock"

    def api(method, path, body=None):
        conn = http.client.HTTPConnection("engine")
        conn.sock = socket.socket(socket.AF_UNIX)
        conn.sock.connect(sock)
        conn.request(method, "/v1.41" + path, body=json.dumps(body) if body is not None else None,
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        data = resp.read()
        return json.loads(data) if data else None

    net = "berth-bench-engine-alone"
    api("POST", "/networks/create", {"Name": net, "Driver": "bridge"})
    samples = []
    try:
        for _ in range(runs):
            t0 = time.perf_counter()
            created = api("POST", "/containers/create", {
                "Image": "berth-test/node:20", "Cmd": ["sleep", "30"], "ExposedPorts": {"8080/tcp": {}},
                "HostConfig": {"NetworkMode": net, "Init": True, "CapDrop": ["ALL"],
                               "SecurityOpt": ["no-new-privileges:true"], "Memory": 512 << 20,
                               "MemorySwap": 512 << 20, "NanoCpus": 10**9, "PidsLimit": 256}})
            api("POST", f"/containers/{created['Id']}/start")
            samples.append((time.perf_counter() - t0) * 1000)
            api("DELETE", f"/containers/{created['Id']}?force=true")
    finally:
        api("DELETE", f"/networks/{net}")
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
        engine = engine_alone(args.runs)
        paused = first_requests(b, "dozy", lambda states: states == ["paused"], args.runs)
        held = paused_memory(b, "dozy")
        set_keep_paused(b, 0)
        cold = first_requests(b, "sleepy", lambda states: states == [], args.runs)
    finally:
        b.stop()
        cleanup(b.data)
    med = statistics.median
    print("| measure | result | target |")
    print("| --- | --- | --- |")
    print(f"| redeploy of an unchanged Dockerfile site until the new container serves (cache hit, median of {len(redeploy)}) | {med(redeploy):.0f} ms | ≤ 2000 ms |")
    print(f"| wake of a paused container (first stage of sleep): first request (median of {len(paused)}) | {med(paused):.0f} ms | ≤ 300 ms |")
    print(f"| memory a paused Node container holds while asleep (engine stats, without page cache) | {held / 2**20:.1f} MiB | |")
    print(f"| cold start from zero of a container (removed): first request (median of {len(cold)}) | {med(cold):.0f} ms | |")
    print(f"| Node's own boot until its port answers (median of {len(boot)}) | {med(boot):.0f} ms | |")
    print(f"| container cold start overhead (first request − boot) | {med(cold) - med(boot):.0f} ms | ≤ 300 ms |")
    print(f"| for context: the engine alone, create + start of a container with berth's options (median of {len(engine)}) | {med(engine):.0f} ms | |")


if __name__ == "__main__":
    main()
