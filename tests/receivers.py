"""Real HTTP receivers on 127.0.0.1 for delivery tests: each request is answered by a
behaviour (a status with headers after a delay, or a reset connection) and recorded."""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    raw: bytes
    at: float
    answered: int | None = None  # the status sent back; None: the connection was reset

    @property
    def body(self) -> Any:
        return json.loads(self.raw or b"null")

    @property
    def notification_id(self) -> str | None:
        return self.headers.get("x-lorawatch-notification-id")


@dataclass
class Answer:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    reset: bool = False  # close the connection with a TCP reset instead of answering
    text: str = "ok"


Behaviour = Callable[[Received, int], Answer]  # (request, how many requests this path had before)


class Receivers:
    """One server; behaviours by path prefix (longest first); every request recorded."""

    def __init__(self) -> None:
        self.behaviours: dict[str, Behaviour] = {}
        self.received: list[Received] = []
        self.lock = threading.Lock()
        receivers = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                request = Received(self.path, {k.lower(): v for k, v in self.headers.items()}, raw, time.monotonic())
                with receivers.lock:
                    before = sum(r.path.startswith(self._prefix()) for r in receivers.received)
                    receivers.received.append(request)
                answer = receivers.behaviours.get(self._prefix(), lambda r, n: Answer(404))(request, before)
                if answer.delay:
                    time.sleep(answer.delay)
                if answer.reset:
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.connection.close()
                    self.close_connection = True
                    return
                payload = answer.text.encode()
                try:
                    self.send_response(answer.status)
                    for k, v in answer.headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    request.answered = answer.status
                except OSError:
                    pass  # the client gave up (its timeout): nothing was delivered

            def _prefix(self) -> str:
                matches = [p for p in receivers.behaviours if self.path.startswith(p)]
                return max(matches, key=len) if matches else self.path

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def on(self, prefix: str, behaviour: Behaviour) -> str:
        """Answer requests under ``prefix`` with ``behaviour``; returns the full URL."""
        self.behaviours[prefix] = behaviour
        return self.url + prefix

    def at(self, prefix: str) -> list[Received]:
        with self.lock:
            return [r for r in self.received if r.path.startswith(prefix)]

    def accepted_ids(self, prefix: str) -> list[str]:
        """Notification ids this path answered 2xx to, once per acceptance (repeats = duplicates)."""
        return [r.notification_id for r in self.at(prefix) if r.answered and 200 <= r.answered < 300]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def first_then(first: list[Answer], then: Answer | None = None) -> Behaviour:
    """The given answers for the first requests, then ``then`` (200 by default) for all others."""
    rest = then or Answer(200)
    return lambda request, before: first[before] if before < len(first) else rest
