"""A webhook receiver for the stream tests: an HTTP server on 127.0.0.1 that keeps what
each POST brought and answers it as the test says."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Receiver:
    """An HTTP server on 127.0.0.1 that answers POST ``n`` (from 0) with ``answer(n)``."""

    def __init__(self, answer: Callable[[int], int] = lambda n: 200) -> None:
        self.answer = answer
        self.posts: list[tuple[int, list[dict[str, Any]], dict[str, str]]] = []
        self.lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with owner.lock:
                    n = len(owner.posts)
                    status = owner.answer(n)
                    owner.posts.append((status, body, dict(self.headers)))
                self.send_response(status)
                if status == 302:
                    self.send_header("Location", "http://127.0.0.1:9/elsewhere")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def taken(self) -> list[dict[str, Any]]:
        with self.lock:
            return [r for status, body, _h in self.posts if status == 200 for r in body]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
