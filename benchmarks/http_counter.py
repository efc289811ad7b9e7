"""The HTTP receiver of the user-pattern comparison: ``python -m benchmarks.http_counter``.

A standard-library :class:`~http.server.ThreadingHTTPServer` on 127.0.0.1 that answers
every ``POST`` with 204 and counts the readings it was sent, as the tiny Flask or
``http.server`` endpoint such scripts post to would. Prints ``{"port": P}``, then answers
``{"op": "count"}`` with ``{"count": N}`` until its stdin closes. Its CPU is measured
apart from the script's.
"""

from __future__ import annotations

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .figures import HOST
from .procs import raise_fd_limit, serve_lines

_lock = threading.Lock()
_count = 0


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive for clients that reuse connections

    def do_POST(self) -> None:
        global _count
        length = int(self.headers.get("content-length") or 0)
        json.loads(self.rfile.read(min(length, 65536)) or b"{}")
        with _lock:
            _count += 1
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: one log line per reading would cost more than the reading."""


def main() -> int:
    """Serve until stdin closes."""
    raise_fd_limit()
    requests, responses = serve_lines()
    server = ThreadingHTTPServer((HOST, 0), _Handler)
    server.daemon_threads = True
    server.request_queue_size = 1024
    threading.Thread(target=server.serve_forever, daemon=True).start()
    responses.write(json.dumps({"port": server.server_address[1]}) + "\n")
    for line in requests:
        message = json.loads(line)
        if message.get("op") == "count":
            with _lock:
                responses.write(json.dumps({"count": _count}) + "\n")
    server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
