"""A fault-injecting HTTP proxy for tests, in front of fake-gcs-server (stdlib only).

It forwards every request to `upstream` and, on a share of them chosen by a seeded random
generator, answers 503 or 429 itself, or resets the connection (TCP RST) before or after
the request reached the server. `mode = "down"` answers 503 to everything (a permanent
outage); `forbid_writes` answers 403 to uploads and deletes below a prefix (an output the
job may not write); `fail_first` answers 503 to the first n requests for an object, then
forwards; `stall` holds the first n GETs of an object for some seconds before answering (a
stalled read). Counters say what it did. Listens on 127.0.0.1 only.

    with FaultProxy(upstream, rates={"503": 0.1, "429": 0.05, "reset": 0.1}) as proxy:
        env["STORAGE_EMULATOR_HOST"] = proxy.url
"""

from __future__ import annotations

import collections
import http.client
import http.server
import json
import random
import socket
import struct
import threading
import urllib.parse

FAULTS = ("503", "429", "reset", "reset_after")


class _QuietServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    # Clients open many connections at once; with socketserver's backlog of 5, the rest
    # would wait for SYN retransmissions (1, 3, 7... s).
    request_queue_size = 1024

    def handle_error(self, request, client_address) -> None:
        pass  # a client that hung up (after a reset or a retry) is part of the test


class FaultProxy:
    def __init__(
        self,
        upstream: str,
        rates: dict[str, float] | None = None,
        seed: int = 0,
        methods: tuple[str, ...] = ("GET", "POST", "PUT", "DELETE", "PATCH"),
    ) -> None:
        parsed = urllib.parse.urlsplit(upstream)
        self.upstream_host, self.upstream_port = parsed.hostname, parsed.port
        self.rates = dict(rates or {})
        unknown = set(self.rates) - set(FAULTS)
        assert not unknown, f"unknown faults {unknown}"
        self.methods = methods
        self.mode = "faulty"  # or "down": 503 to everything
        self.forbid_writes: str | None = None  # object-name prefix uploads to get 403
        self.counts: collections.Counter[str] = collections.Counter()
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self.down_after_write: str | None = None  # go "down" once this object is written
        # (path part, n): GETs of paths holding the part get 503 after the first n of them
        self.fail_reads_after: tuple[str, int] | None = None
        # (path part, n): the first n requests of paths holding the part get 503
        self.fail_first: tuple[str, int] | None = None
        # (path part, n, seconds): the first n GETs of such paths wait that long first
        self.stall: tuple[str, int, float] | None = None
        self._closing = threading.Event()
        self._server = _QuietServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closing.set()  # ends any stall
        self._server.shutdown()
        self._server.server_close()

    def _pick(self, method: str) -> str | None:
        with self._lock:
            self.counts["requests"] += 1
            if self.mode == "down":
                return "503"
            if method not in self.methods:
                return None
            draw = self._random.random()
            for fault in FAULTS:
                rate = self.rates.get(fault, 0.0)
                if draw < rate:
                    return fault
                draw -= rate
            return None

    def _read_fails(self, path: str) -> bool:
        """Whether a GET of `path` fails: it is one of fail_reads_after's, past the first n."""
        if self.fail_reads_after is None or self.fail_reads_after[0] not in path:
            return False
        with self._lock:
            self.counts["reads"] += 1
            return self.counts["reads"] > self.fail_reads_after[1]

    def _first(self, rule: tuple | None, what: str, path: str) -> bool:
        """Whether this request of `path` is one of the first n the rule names."""
        if rule is None or rule[0] not in path:
            return False
        with self._lock:
            self.counts[f"{what} seen"] += 1
            return self.counts[f"{what} seen"] <= rule[1]

    def _count(self, what: str) -> None:
        with self._lock:
            self.counts[what] += 1

    def _handler(self):
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as a real endpoint does

            def log_message(self, *args: object) -> None:
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    parts = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return b"".join(parts)
                        parts.append(self.rfile.read(size))
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _reset(self) -> None:
                """Close with RST, not FIN: what a dropped connection looks like."""
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
                self.close_connection = True
                try:
                    self.connection.close()
                except OSError:
                    pass

            def _answer(self, status: int, body: bytes, headers: list[tuple[str, str]]) -> None:
                self.send_response(status)
                for key, value in headers:
                    if key.lower() not in ("transfer-encoding", "content-length", "connection"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _error(self, status: int, reason: str) -> None:
                body = json.dumps({"error": {"code": status, "message": reason}}).encode()
                self._answer(status, body, [("Content-Type", "application/json")])

            def _forward(self, body: bytes) -> tuple[int, bytes, list[tuple[str, str]]]:
                upstream = http.client.HTTPConnection(
                    proxy.upstream_host, proxy.upstream_port, timeout=60
                )
                try:
                    headers = {
                        k: v
                        for k, v in self.headers.items()
                        if k.lower() not in ("transfer-encoding", "connection", "content-length")
                    }
                    headers["Content-Length"] = str(len(body))
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    response = upstream.getresponse()
                    return response.status, response.read(), response.getheaders()
                finally:
                    upstream.close()

            def _is_forbidden_write(self, body: bytes) -> bool:
                prefix = proxy.forbid_writes
                if prefix is None or self.command not in ("POST", "PUT", "DELETE", "PATCH"):
                    return False
                # the object name: in the path (delete), the query or the multipart metadata
                where = urllib.parse.unquote(self.path) + body[:2000].decode("latin-1")
                return prefix in where

            def _handle(self) -> None:
                body = self._body()
                if self._is_forbidden_write(body):
                    proxy._count("403")
                    self._error(403, "Forbidden: the caller does not have storage.objects.create")
                    return
                fault = proxy._pick(self.command)
                if self.command == "GET" and proxy._read_fails(self.path):
                    fault = "503"
                if proxy._first(proxy.fail_first, "fail_first", self.path):
                    fault = "503"
                if self.command == "GET" and proxy._first(proxy.stall, "stall", self.path):
                    proxy._count("stall")
                    proxy._closing.wait(proxy.stall[2])
                if fault:
                    proxy._count(fault)
                    proxy._count(f"faults {self.command}")
                if fault in ("503", "429"):
                    reason = "Service Unavailable" if fault == "503" else "Too Many Requests"
                    self._error(int(fault), reason)
                    return
                if fault == "reset":
                    self._reset()
                    return
                status, content, headers = self._forward(body)
                if (
                    proxy.down_after_write
                    and self.command == "POST"
                    and status < 300
                    and proxy.down_after_write.encode() in body[:2000]
                ):
                    proxy.mode = "down"  # the object is in; everything after fails
                if fault == "reset_after":  # the server did it; the client never hears
                    self._reset()
                    return
                self._answer(status, content, headers)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _handle

        return Handler
