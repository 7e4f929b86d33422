"""A real HTTP receiver on loopback for delivery tests: scripted answers, every request kept."""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Answer:
    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    delay: float = 0.0  # seconds before answering (longer than the sender's timeout: a timeout)


@dataclass(frozen=True)
class Received:
    at: float
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """Answers with `script` in order (then `default`), keeping every request it got."""

    script: list[Answer] = field(default_factory=list)
    default: Answer = field(default_factory=Answer)
    received: list[Received] = field(default_factory=list)
    port: int = 0
    scheme: str = "http"
    host: str = "127.0.0.1"
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}/hook"

    def next_answer(self, request: Received) -> Answer:
        with self.lock:
            self.received.append(request)
            return self.script.pop(0) if self.script else self.default

    def wait_for(self, count: int, timeout: float = 30.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while len(self.received) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return list(self.received)


@contextmanager
def receiving(
    given: Receiver | None = None, tls: ssl.SSLContext | None = None
) -> Iterator[Receiver]:
    """Serves `given` on 127.0.0.1 (https with `tls`) until the block ends."""
    receiver = given or Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            body = self.rfile.read(length)
            if len(body) < length:
                return  # the sender died mid-request (a killed server): nothing arrived
            answer = receiver.next_answer(
                Received(time.monotonic(), self.path, dict(self.headers.items()), body)
            )
            time.sleep(answer.delay)
            try:
                self.send_response(answer.status)
                for name, value in answer.headers:
                    self.send_header(name, value)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")
            except OSError:
                pass  # the sender gave up waiting

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
        receiver.scheme = "https"
    receiver.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
