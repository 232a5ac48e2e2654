"""Helpers shared by berth's benchmark scripts: a running `berth serve`, HTTP calls and app
tarballs."""
import io, json, os, socket, subprocess, tarfile, tempfile, time
import urllib.request, urllib.error

KEY = "berth_bench_admin_key_0123456789"


def http(method, url, body=None, headers=None, timeout=120):
    """(status, body); status 0 when nothing answered."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except (urllib.error.URLError, ConnectionError, socket.timeout):
        return 0, b""


def tarball(files):
    """A tar.gz of {path: text}, as `berth deploy` uploads it."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


class Berth:
    """A `berth serve` on free ports in a fresh data dir, with the bench admin key."""

    def __init__(self, binary, run_as=None, args=(), log_filter="warn", log_path=None, database_url=None):
        """`run_as`: a uid to run the server as instead of the caller (e.g. an
        unprivileged one, where berth cannot confine apps); `args`: more `serve` flags;
        `log_filter` and `log_path`: the server's log (BERTH_LOG) and where it goes;
        `database_url`: its BERTH_DATABASE_URL (unset: SQLite in the data dir)."""
        self.data = tempfile.mkdtemp(prefix="berth-bench-")
        env = dict(os.environ, BERTH_BOOTSTRAP_KEY=KEY, BERTH_LOG=log_filter)
        env.pop("BERTH_DATABASE_URL", None)
        if database_url:
            env["BERTH_DATABASE_URL"] = database_url
        prefix = []
        if run_as is not None:
            os.chown(self.data, run_as, run_as)
            prefix = ["setpriv", f"--reuid={run_as}", f"--regid={run_as}", "--clear-groups", "--"]
        self.proc = subprocess.Popen(
            prefix + [binary, "serve", "--data", self.data, "--listen", "127.0.0.1:0", "--edge-listen", "127.0.0.1:0",
                      "--edge-tls-listen", "127.0.0.1:0",
                      *args],
            env=env, stdout=subprocess.DEVNULL,
            stderr=open(log_path, "w") if log_path else subprocess.DEVNULL)
        ports_file = os.path.join(self.data, "ports.json")
        while not os.path.exists(ports_file):
            time.sleep(0.02)
        time.sleep(0.05)
        ports = json.load(open(ports_file))
        self.api, self.edge_port = f"http://127.0.0.1:{ports['api']}", ports["edge"]
        self.edge_tls_port = ports.get("edge_tls")
        while http("GET", self.api + "/healthz")[0] != 200:
            time.sleep(0.02)

    def call(self, method, path, body=None, raw=None):
        headers = {"Authorization": f"Bearer {KEY}"}
        data = raw
        if body is not None:
            data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
        status, out = http(method, self.api + path, data, headers)
        return status, (json.loads(out) if out else None)

    def upload(self, site, files):
        status, out = self.call("POST", f"/api/sites/{site}/upload?wait=true", raw=tarball(files))
        assert status == 202 and out["deployment"]["status"] == "live", out
        return out

    def edge(self, site, timeout=60):
        return http("GET", f"http://127.0.0.1:{self.edge_port}/", headers={"Host": f"{site}.localhost"}, timeout=timeout)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)


class PostgresDatabase:
    """A fresh database on the Postgres server at `server_url` (e.g. the one
    scripts/postgres-test-env.sh starts), dropped by `drop()`; `url` is its own URL."""

    def __init__(self, server_url, name):
        self.server_url, self.name = server_url, name
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.psql(f'CREATE DATABASE "{name}"')
        base = server_url.rsplit("/", 1)[0]
        self.url = f"{base}/{name}"

    def psql(self, sql, url=None):
        """Runs `sql` with psql (stops at the first error); returns its output."""
        out = subprocess.run(["psql", url or self.server_url, "-v", "ON_ERROR_STOP=1", "-qAt", "-c", sql],
                             check=True, capture_output=True, text=True)
        return out.stdout

    def drop(self):
        self.psql(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
