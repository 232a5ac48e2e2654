#!/usr/bin/env python3
"""DNS correct → certificate served, against a real ACME CA (Debian's `pebble`, no
validation sleep, nonce rejection on) and a real DNS server (`pebble-challtestsrv`), all on
loopback: for each of N apex domains of one site, the records are set, then the clock runs
from `HOSTING_VALIDATE_DOMAIN` until a TLS handshake with the domain's SNI verifies against
pebble's root and an HTTPS request answers 200. Prints p50, p95 and max.

Usage: scripts/bench_certificates.py [BINARY] [--domains N]
(BINARY defaults to target/release/berth; run as root or not, either works.)"""
import argparse, json, os, socket, ssl, subprocess, sys, tempfile, time
import urllib.request

sys.path.insert(0, os.path.dirname(__file__))
from benchlib import Berth, http  # noqa: E402


def free_port():
    while True:
        with socket.socket() as t:
            t.bind(("127.0.0.1", 0))
            port = t.getsockname()[1]
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                u.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue


def post(url, body):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.read()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary", nargs="?", default="target/release/berth")
    ap.add_argument("--domains", type=int, default=20)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="berth-bench-certs-")
    dns_port, mgmt = free_port(), free_port()
    dns = subprocess.Popen(["pebble-challtestsrv", "-dns01", f"127.0.0.1:{dns_port}", "-http01", "",
                            "-https01", "", "-tlsalpn01", "", "-management", f"127.0.0.1:{mgmt}",
                            "-defaultIPv4", "", "-defaultIPv6", ""],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    api_pem, api_key = os.path.join(work, "api.pem"), os.path.join(work, "api.key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-keyout", api_key, "-out", api_pem, "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                    "-addext", "basicConstraints=critical,CA:FALSE"], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pebble_port, pebble_mgmt = free_port(), free_port()
    berth = Berth(args.binary, log_filter="info", log_path=os.path.join(work, "berth.log"), args=["--dns-resolvers", f"127.0.0.1:{dns_port}", "--public-ipv4", "127.0.0.1",
                                     "--acme-directory", f"https://127.0.0.1:{pebble_port}/dir",
                                     "--acme-ca-roots", api_pem])
    config = {"pebble": {"listenAddress": f"127.0.0.1:{pebble_port}",
                         "managementListenAddress": f"127.0.0.1:{pebble_mgmt}",
                         "certificate": api_pem, "privateKey": api_key,
                         "httpPort": berth.edge_port, "tlsPort": berth.edge_tls_port,
                         "ocspResponderURL": "", "externalAccountBindingRequired": False}}
    config_path = os.path.join(work, "pebble.json")
    json.dump(config, open(config_path, "w"))
    pebble = subprocess.Popen(["pebble", "-config", config_path, "-dnsserver", f"127.0.0.1:{dns_port}"],
                              env=dict(os.environ, PEBBLE_VA_NOSLEEP="1"),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    insecure = ssl.create_default_context()
    insecure.check_hostname, insecure.verify_mode = False, ssl.CERT_NONE
    root = None
    for _ in range(300):
        try:
            with urllib.request.urlopen(f"https://127.0.0.1:{pebble_mgmt}/roots/0", context=insecure) as r:
                root = r.read().decode()
            break
        except OSError:
            time.sleep(0.1)
    assert root, "pebble never answered"
    print(f"logs in {work}", flush=True)
    trust = ssl.create_default_context(cadata=root)
    try:
        berth.upload("bench", {"index.html": "<h1>bench</h1>"})
        times = []
        for i in range(args.domains):
            name = f"d{i}-bench.com"
            status, added = berth.call("POST", "/api/sites/bench/domains", {"domain": name})
            assert status == 201, added
            token = next(r["value"] for r in added["records"] if r["type"] == "TXT")
            post(f"http://127.0.0.1:{mgmt}/add-a", {"host": name, "addresses": ["127.0.0.1"]})
            post(f"http://127.0.0.1:{mgmt}/set-txt", {"host": f"_berth-challenge.{name}.", "value": token})
            t0 = time.monotonic()
            status, out = berth.call("POST", f"/api/sites/bench/domains/{name}/validate", {})
            assert status == 200, out
            while True:
                try:
                    with socket.create_connection(("127.0.0.1", berth.edge_tls_port), timeout=5) as raw:
                        with trust.wrap_socket(raw, server_hostname=name) as tls:
                            tls.sendall(f"GET / HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n".encode())
                            if tls.recv(64).startswith(b"HTTP/1.1 200"):
                                break
                except (OSError, ssl.SSLError):
                    pass
                assert time.monotonic() - t0 < 120, f"{name}: no certificate after 120 s"
                time.sleep(0.05)
            times.append(time.monotonic() - t0)
            print(f"{name}: {times[-1]:.2f} s", flush=True)
        times.sort()
        p = lambda q: times[min(len(times) - 1, int(q * len(times)))]
        print(f"domains={len(times)} p50={p(0.5):.2f} s p95={p(0.95):.2f} s max={times[-1]:.2f} s")
    finally:
        berth.stop()
        pebble.terminate()
        dns.terminate()


if __name__ == "__main__":
    main()
