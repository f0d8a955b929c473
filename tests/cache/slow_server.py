"""An HTTP server that sends part of one file and then stalls: a ware "served slowly".

``python -m tests.cache.slow_server FILE NBYTES PORTFILE``: answers every GET
with the full Content-Length of FILE, sends its first NBYTES, then sleeps
until killed. Writes its port to PORTFILE once listening.
"""

from __future__ import annotations

import http.server
import sys
import time
from pathlib import Path
from typing import Any


def main(path: Path, nbytes: int, portfile: Path) -> None:
    data = path.read_bytes()

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[:nbytes])
            self.wfile.flush()
            time.sleep(3600)

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    tmp = portfile.with_suffix(".tmp")
    tmp.write_text(str(server.server_address[1]))
    tmp.rename(portfile)
    server.serve_forever()


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3]))
