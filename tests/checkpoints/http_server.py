"""A local HTTP server for download tests (no test ever reaches the internet).

Serves files from a dict ``{path: bytes}`` on 127.0.0.1 with HTTP Range support, records each
request's path and Range header, and can cut the next N responses (or the next response for given paths,
``cut_once``) in half (the body stops after half of the announced Content-Length and the connection closes) or
ignore Range headers.

Each response carries the file's validators, as real servers do: ``ETag`` (a hash of the content) and
``Last-Modified`` (a date derived from the content), each switchable off (``send_etag``,
``send_last_modified``). A Range request with ``If-Range`` is honoured only when the value matches the current
file's ETag or Last-Modified; otherwise the whole (changed) file comes back with 200, as RFC 9110 says.
``if_ranges`` records each request's If-Range header.
"""

from __future__ import annotations

import email.utils
import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FileServer:
    def __init__(self, files: dict[str, bytes]):
        self.files = dict(files)
        self.requests: list[tuple[str, str | None]] = []
        self.cut_next = 0
        self.ignore_range = False
        self.headers: dict[str, str] = {}  # extra response headers (x-goog-hash)
        self.send_etag = True
        self.send_last_modified = True
        self.if_ranges: list[str | None] = []
        self.cut_once: set[str] = set()  # paths whose next response is cut in half (then served whole again)
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep pytest output clean
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                rng = self.headers.get("Range")
                server.requests.append((self.path, rng))
                server.if_ranges.append(self.headers.get("If-Range"))
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                digest = hashlib.sha256(body).hexdigest()
                etag = f'"{digest[:16]}"'
                modified = email.utils.formatdate(1_600_000_000 + int(digest[:6], 16), usegmt=True)
                valid = {etag if server.send_etag else None, modified if server.send_last_modified else None}
                if_range = self.headers.get("If-Range")
                if if_range is not None and if_range not in valid:
                    rng = None  # the file changed since the client's copy began: send all of it
                start, status = 0, 200
                if rng and not server.ignore_range:
                    start = int(rng.removeprefix("bytes=").split("-")[0])
                    if start >= len(body):
                        self.send_error(416)
                        return
                    status = 206
                chunk = body[start:]
                self.send_response(status)
                self.send_header("Content-Length", str(len(chunk)))
                if server.send_etag:
                    self.send_header("ETag", etag)
                if server.send_last_modified:
                    self.send_header("Last-Modified", modified)
                for k, v in server.headers.items():
                    self.send_header(k, v)
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                self.end_headers()
                if server.cut_next or self.path in server.cut_once:
                    if self.path in server.cut_once:
                        server.cut_once.discard(self.path)
                    else:
                        server.cut_next -= 1
                    self.wfile.write(chunk[: len(chunk) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(chunk)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> FileServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __exit__(self, *exc: object) -> None:
        if self.thread.is_alive():
            self.stop()
