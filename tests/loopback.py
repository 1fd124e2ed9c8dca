"""A loopback HTTP server for download tests: serves a dict {path: bytes} on 127.0.0.1 with Range
support; `truncate` lists paths whose next response stops halfway (the connection drops)."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class Served:
    """What the server serves and what it saw."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files  # URL path ("/a/b.tar") -> content
        self.truncate: set[str] = set()  # paths whose next GET ends halfway
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        self.base = ""  # http://127.0.0.1:<port>, set once serving

    def url(self, path: str) -> str:
        return f"{self.base}{path}"


@contextmanager
def serve(files: dict[str, bytes]) -> Iterator[Served]:
    served = Served(files)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            header = self.headers.get("Range")
            served.requests.append((self.path, header))
            body = served.files.get(self.path)
            if body is None:
                self.send_error(404, "not found")
                return
            start = int(header.split("=")[1].rstrip("-")) if header else 0
            if start >= len(body) and header:
                self.send_error(416, "range not satisfiable")
                return
            self.send_response(206 if header else 200)
            if header:
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            data = body[start:]
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.path in served.truncate:
                served.truncate.discard(self.path)
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                self.connection.shutdown(2)  # the client sees the body end early
                return
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    served.base = f"http://127.0.0.1:{httpd.server_port}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield served
    finally:
        httpd.shutdown()
        httpd.server_close()
