"""Many small objects over kept-alive HTTP/1.1 connections: the posters a first epoch
fetches from a bucket.

gcsfs spent 0.23 ms of CPU on each poster it fetched (aiohttp, and its retry, header and
response layers): half of what decoding a poster costs, on the same cores. Here each of
CONNECTIONS connections sends one bare GET at a time and reads the Content-Length body
straight off the socket: 0.06 ms a poster (scripts/bench_storage.py). Only the plain
case is handled: 200 (the bytes) and 404 (missing). Any other answer, a
chunked body, a broken or stalled connection leaves that object to the caller, who
fetches it again through gcsfs, with its retries, credential refresh and errors.
"""

from __future__ import annotations

import asyncio
import ssl
import urllib.parse
from collections.abc import Iterator

# Connections, each with one request in flight: 128 could keep a bucket 20 ms away at
# 6,400 requests/s; 64 fetched 2,700 posters/s through the benchmark's latency proxy.
CONNECTIONS = 128
CONNECT_TIMEOUT_S = 30.0  # as gcsfs's (job/storage.py)


class Unusable(Exception):
    """An answer this client does not read (chunked); its object goes to gcsfs."""


class HttpConnection(asyncio.Protocol):
    """One HTTP/1.1 connection: one GET at a time, its answer parsed as bytes arrive."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.waiter: asyncio.Future | None = None
        self.status = 0
        self.length: int | None = None  # the body's, once the head is in; None: to close
        self.head_read = False
        self.keep_alive = True
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is None or self.waiter.done():
            return
        if self.head_read and self.length is None:  # a body that ends with the connection
            self.waiter.set_result((self.status, bytes(self.buffer)))
        else:
            self.waiter.set_exception(ConnectionError("connection closed mid-answer"))

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.waiter is None or self.waiter.done():
            return  # nothing asked: the connection is dropped before its next use
        if not self.head_read:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            try:
                self.read_head(bytes(self.buffer[:end]).decode("latin-1"))
            except (ValueError, IndexError) as error:  # not an HTTP answer we read
                self.keep_alive = False
                self.waiter.set_exception(Unusable(f"answer head: {error}"))
            del self.buffer[: end + 4]
            if self.waiter.done():  # refused
                return
        if self.length is not None and len(self.buffer) >= self.length:
            body = bytes(self.buffer[: self.length])
            del self.buffer[: self.length]
            self.waiter.set_result((self.status, body))

    def read_head(self, head: str) -> None:
        status_line, *lines = head.split("\r\n")
        version, status = status_line.split(" ", 2)[:2]
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip().lower()
        self.status, self.head_read = int(status), True
        self.keep_alive = version == "HTTP/1.1" and headers.get("connection") != "close"
        if "transfer-encoding" in headers:  # chunked: not read here
            self.keep_alive = False
            self.waiter.set_exception(Unusable(f"transfer-encoding {headers['transfer-encoding']}"))
        elif "content-length" in headers:
            self.length = int(headers["content-length"])
        else:
            self.keep_alive = False

    async def get(self, request: bytes, timeout: float) -> tuple[int, bytes]:
        """(status, body) of one request; TimeoutError when no answer comes in `timeout` s
        (a timer, not asyncio.wait_for: that makes a task a request)."""
        loop = asyncio.get_running_loop()
        self.waiter = waiter = loop.create_future()
        self.head_read, self.length = False, None
        self.transport.write(request)
        timer = loop.call_later(timeout, self.stalled, waiter)
        try:
            return await waiter
        finally:
            timer.cancel()

    def stalled(self, waiter: asyncio.Future) -> None:
        if not waiter.done():
            waiter.set_exception(TimeoutError("no answer from the server"))


async def open_connection(url: urllib.parse.SplitResult, timeout: float) -> HttpConnection:
    """A connection to `url`'s host (TLS for https); TimeoutError after `timeout` s."""
    https = url.scheme == "https"
    port = url.port or (443 if https else 80)
    context = ssl.create_default_context() if https else None
    _, connection = await asyncio.wait_for(
        asyncio.get_running_loop().create_connection(
            HttpConnection, url.hostname, port, ssl=context
        ),
        timeout,
    )
    return connection


class Pool:
    """Up to `size` connections to the host of `base` (a URL), shared by concurrent
    `get_all` calls, kept open between them; used on one event loop."""

    def __init__(self, base: str, headers: dict[str, str], timeout: float, size: int) -> None:
        self.host, self.timeout = urllib.parse.urlsplit(base), timeout
        self.origin = f"{self.host.scheme}://{self.host.netloc}"
        self.extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        self.size = size
        self.idle: asyncio.Queue[HttpConnection | None] | None = None  # made on the loop

    def request(self, url: str) -> bytes:
        path = url[len(self.origin) :]  # all on the pool's host
        head = f"GET {path} HTTP/1.1\r\nHost: {self.host.netloc}\r\n{self.extra}\r\n"
        return head.encode("latin-1")

    async def get_all(self, urls: list[str]) -> list[tuple[int, bytes] | None]:
        """(status, body) of a GET of each URL (on the pool's host); None where this client
        got no answer (connection failed, or stalled for `timeout` s; chunked body)."""
        if self.idle is None:
            self.idle = asyncio.Queue()
            for _ in range(self.size):
                self.idle.put_nowait(None)  # a slot: connected when first used
        answers: list[tuple[int, bytes] | None] = [None] * len(urls)
        waiting: Iterator[int] = iter(range(len(urls)))  # shared: each index taken once

        async def worker() -> None:
            connection = await self.idle.get()
            try:
                for index in waiting:
                    if connection is None or connection.closed:
                        connection = await open_connection(self.host, CONNECT_TIMEOUT_S)
                    answers[index] = await connection.get(self.request(urls[index]), self.timeout)
                    if not connection.keep_alive:
                        connection.transport.close()
                        connection = None
            except (OSError, TimeoutError, Unusable):  # this and the rest: to the caller
                if connection is not None:
                    connection.transport.abort()
                connection = None
            except asyncio.CancelledError:  # the caller stopped: a request may be half done
                if connection is not None:
                    connection.transport.abort()
                connection = None
                raise
            finally:
                self.idle.put_nowait(connection)

        await asyncio.gather(*(worker() for _ in range(min(self.size, len(urls)))))
        return answers

    async def close(self) -> None:
        while self.idle is not None and not self.idle.empty():
            connection = self.idle.get_nowait()
            if connection is not None:
                connection.transport.close()
