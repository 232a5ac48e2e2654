"""Helpers shared by berth's benchmark scripts: HTTP calls and app tarballs."""
import io, socket, tarfile
import urllib.request, urllib.error


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
