"""A real nginx on 127.0.0.1 for the HTTP-write tests: own prefix, own config, stopped afterwards.

``start_nginx(workdir, root)`` writes ``nginx.conf`` under ``workdir``
(every path nginx writes to, pid, logs, body temp files, is in there too),
starts ``nginx -p workdir -c nginx.conf -g 'daemon off;'`` as a child
process on a free port and waits until it accepts connections. The caller
stops it with ``stop()``, which sends SIGQUIT to that child (the master) and
waits for it: its workers exit with it, so nothing is left running.

Locations served from ``root`` (a directory in the test's tmp dir):

``/dav/``     full WebDAV writes: PUT DELETE MKCOL COPY MOVE, create_full_put_path.
``/nomove/``  PUT and DELETE only: MOVE answers 405, so saves use the fallback.
``/mkcol/``   no create_full_put_path: PUT into a missing directory is 409 and the
              client must MKCOL the shard directories.
``/denymove/`` MOVE is forbidden (403) while PUT and DELETE work: a save fails
              after its temp upload, which must be deleted again.
``/auth/``    like ``/dav/`` behind Basic auth, user ``writer`` password ``s3cret``.
``/public/``  the configuration docs/warehouses.md shows: reading is open,
              every other method needs the ``/auth/`` login.
``/ro/``      plain static files: no WebDAV, every write is 405.

The access log (``access_log()``) has one ``METHOD URI STATUS`` line per
request, so a test can show which requests a save made.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

USER = "writer"
PASSWORD = "s3cret"

_DAV = "client_max_body_size 0; dav_access user:rw group:r all:r;"

_CONFIG = """\
worker_processes 1;
pid {work}/nginx.pid;
error_log {work}/error.log warn;
{user}
events {{ worker_connections 64; }}
http {{
    log_format methods '$request_method $uri $status';
    access_log {work}/access.log methods;
    client_body_temp_path {work}/body;
    proxy_temp_path {work}/proxy;
    fastcgi_temp_path {work}/fastcgi;
    uwsgi_temp_path {work}/uwsgi;
    scgi_temp_path {work}/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location /dav/ {{
            dav_methods PUT DELETE MKCOL COPY MOVE; create_full_put_path on; {dav}
        }}
        location /nomove/ {{
            dav_methods PUT DELETE; create_full_put_path on; {dav}
        }}
        location /mkcol/ {{
            dav_methods PUT DELETE MKCOL MOVE; {dav}
        }}
        location /denymove/ {{
            dav_methods PUT DELETE MOVE; create_full_put_path on; {dav}
            limit_except GET HEAD PUT DELETE {{ deny all; }}
        }}
        location /auth/ {{
            dav_methods PUT DELETE MKCOL COPY MOVE; create_full_put_path on; {dav}
            auth_basic "warehouse"; auth_basic_user_file {work}/htpasswd;
        }}
        location /public/ {{
            dav_methods PUT DELETE MKCOL MOVE; create_full_put_path on; {dav}
            limit_except GET {{
                auth_basic "warehouse"; auth_basic_user_file {work}/htpasswd;
            }}
        }}
        location /ro/ {{
        }}
    }}
}}
"""


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/sbin/nginx") if os.access(p, os.X_OK)), None
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@dataclass
class Nginx:
    """A running nginx: ``url`` is ``http://127.0.0.1:<port>``."""

    work: Path
    root: Path
    port: int
    process: subprocess.Popen[bytes] = field(repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def access_log(self) -> list[str]:
        """``METHOD URI STATUS`` per request so far (nginx writes each line as it finishes)."""
        path = self.work / "access.log"
        return path.read_text().splitlines() if path.exists() else []

    def stop(self) -> None:
        """Graceful stop (SIGQUIT to the master we started), then wait for it to exit."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_nginx(work: Path, root: Path) -> Nginx:
    """Start nginx serving ``root``; RuntimeError (with its error log) if it will not start."""
    binary = nginx_binary()
    if binary is None:
        raise RuntimeError("nginx is not installed: apt-get install nginx-light")
    work.mkdir(parents=True, exist_ok=True)
    (work / "htpasswd").write_text(f"{USER}:{{PLAIN}}{PASSWORD}\n")
    # As root the workers would switch to "nobody", who cannot enter pytest's
    # 0700 tmp dirs; keep them as root. (As another user nginx cannot switch
    # and the directive is left out.)
    user = "user root root;" if os.geteuid() == 0 else ""
    last_error = ""
    for _attempt in range(5):  # the free port may be taken between probe and bind
        port = _free_port()
        (work / "nginx.conf").write_text(
            _CONFIG.format(work=work, root=root, port=port, user=user, dav=_DAV)
        )
        process = subprocess.Popen(
            [binary, "-p", str(work), "-c", str(work / "nginx.conf"), "-e",
             str(work / "error.log"), "-g", "daemon off;"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        server = Nginx(work, root, port, process)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and process.poll() is None:
            if _accepts(port):
                return server
            time.sleep(0.02)
        server.stop()
        log = work / "error.log"
        last_error = log.read_text() if log.exists() else f"exit status {process.returncode}"
        if "Address already in use" not in last_error:
            break
    raise RuntimeError(f"nginx did not start: {last_error}")
