"""Many small objects over kept-alive HTTP/1.1 connections: the posters a first epoch
fetches from a bucket.

gcsfs spent 0.23 ms of CPU on each poster it fetched (aiohttp, and its retry, header and
response layers): half of what decoding a poster costs, on the same cores. Here each of
CONNECTIONS connections sends one bare GET at a time and reads the Content-Length body
straight off the socket: 0.06 ms a poster (scripts/bench_storage.py). Only the plain
case is handled: 200 (the bytes) and 404 (missing). Any other answer, a
chunked body, a broken or stalled connection leaves that object to the caller, who
fetches it again through gcsfs, with its retries, credential refresh and errors (and a
worker that met a stall or an answer it cannot read stops asking).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import resource
import ssl
import time
import urllib.parse


def connection_count() -> int:
    """Connections to open, each with one request in flight: as many as the cores can
    decode for. A core decodes about 3,500 real posters a second, which takes 70 requests
    in flight from a bucket 20 ms away, 175 from one 50 ms away: 96 a core (at least 128,
    at most 1,024), and no more than a quarter of the file handles the process may open (a
    shell's default soft limit is often 1,024: on a 16-core machine the connections would
    have taken every handle, failing whatever else opened a file meanwhile).
    Through the benchmark's 20 ms proxy on 2 cores, fetch + decode ran at 3,520 posters/s
    with 128 connections, 3,700 with 192, 3,670 with 256 (medians of 4; without the proxy
    4,170 / 4,090 / 4,050, within their spread; /tmp script, 2026-11-26)."""
    wanted = min(1024, max(128, 96 * len(os.sched_getaffinity(0))))
    handles = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return wanted if handles == resource.RLIM_INFINITY else max(1, min(wanted, handles // 4))


CONNECTIONS = connection_count()
CONNECT_TIMEOUT_S = 30.0  # as gcsfs's (job/storage.py)


class Unusable(Exception):
    """An answer this client does not read (chunked, compressed, not HTTP); its object
    goes to gcsfs."""


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
        self.last_data = time.monotonic()  # (a stall is a quiet connection, not a long one)
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
            with memoryview(self.buffer) as view:  # one copy (a shard can be 200 MB)
                body = bytes(view[: self.length])
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
        if "transfer-encoding" in headers or headers.get("content-encoding", "identity") != (
            "identity"
        ):  # chunked or compressed: not read here
            self.keep_alive = False
            self.waiter.set_exception(Unusable(f"answer framing {headers}"))
        elif "content-length" in headers:
            self.length = int(headers["content-length"])
        else:
            self.keep_alive = False

    async def get(self, request: bytes, timeout: float) -> tuple[int, bytes]:
        """(status, body) of one request; TimeoutError when no byte of the answer comes
        for `timeout` s (a timer, not asyncio.wait_for: that makes a task a request)."""
        if self.closed:  # (the caller checks; a write to a closed transport is dropped)
            raise ConnectionError("connection already closed")
        self.waiter = waiter = asyncio.get_running_loop().create_future()
        self.head_read, self.length = False, None
        self.transport.write(request)
        self.last_data = time.monotonic()
        self.timer = asyncio.get_running_loop().call_later(timeout, self.stalled, timeout)
        try:
            return await waiter
        finally:
            self.timer.cancel()

    def stalled(self, timeout: float) -> None:
        if self.waiter.done():
            return
        quiet = time.monotonic() - self.last_data
        if quiet < timeout:  # bytes came meanwhile (a large object): wait on
            self.timer = asyncio.get_running_loop().call_later(
                timeout - quiet, self.stalled, timeout
            )
        else:
            self.waiter.set_exception(TimeoutError(f"no answer from the server for {timeout} s"))


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


class Download:
    """GETs of many URLs on one host, by `connections` workers with one request in
    flight each, taken in order and at most `ahead` chunks of `chunk` ahead of the chunks
    the caller has taken (`take`), so memory holds a few chunks, never the dataset.

    Built on any thread; `run` goes on the event loop, `take` on the caller's thread.
    """

    def __init__(
        self,
        urls: list[str],
        headers: dict[str, str],
        timeout: float,
        chunk: int,
        ahead: int,
        connections: int = CONNECTIONS,
    ) -> None:
        self.urls, self.timeout, self.chunk, self.ahead = urls, timeout, chunk, ahead
        self.host = urllib.parse.urlsplit(urls[0])  # (urls: at least one)
        self.origin = f"{self.host.scheme}://{self.host.netloc}"
        extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        # A request: "GET " + the URL's path and query + this (the Host, the caller's headers).
        self.head = f" HTTP/1.1\r\nHost: {self.host.netloc}\r\n{extra}\r\n"
        self.workers = min(connections, len(urls))
        self.answers: list[tuple[int, bytes] | None] = [None] * len(urls)
        starts = range(0, len(urls), chunk)
        self.left = [min(chunk, len(urls) - start) for start in starts]  # unanswered
        self.chunks = [concurrent.futures.Future() for _ in starts]  # set when all answered
        self.next = 0  # the next index a worker takes
        self.limit = min(len(urls), ahead * chunk)  # workers take indexes below this
        self.more: asyncio.Event | None = None  # made on the loop

    def take(self, number: int, loop: asyncio.AbstractEventLoop) -> list:
        """Chunk `number`'s (status, body) answers, None where no answer came (connection
        failed, or stalled for `timeout` s; chunked body); waits until all are in."""
        self.chunks[number].result()
        loop.call_soon_threadsafe(self.allow, number + 1 + self.ahead)
        start = number * self.chunk
        answers = self.answers[start : start + self.chunk]
        self.answers[start : start + len(answers)] = [None] * len(answers)  # not held here
        return answers

    def allow(self, chunks: int) -> None:
        self.limit = min(len(self.urls), chunks * self.chunk)
        self.more.set()

    def answered(self, index: int) -> None:
        number = index // self.chunk
        self.left[number] -= 1
        if self.left[number] == 0:  # (exactly once a chunk)
            self.chunks[number].set_result(None)

    async def run(self) -> None:
        self.more = asyncio.Event()
        try:
            await asyncio.gather(*(self.worker() for _ in range(self.workers)))
        finally:  # every worker gone (or cancelled): what is left gets no answer
            for index in range(self.next, len(self.urls)):
                self.answered(index)
            self.next = len(self.urls)

    async def worker(self) -> None:
        connection: HttpConnection | None = None
        try:
            while self.next < len(self.urls):
                if self.next >= self.limit:  # far enough ahead of the caller
                    self.more.clear()
                    await self.more.wait()
                    continue
                index, self.next = self.next, self.next + 1
                try:
                    if connection is None or connection.closed:  # (closed while idle)
                        connection = await open_connection(self.host, CONNECT_TIMEOUT_S)
                except (OSError, TimeoutError):  # cannot connect: the others go on
                    self.answered(index)
                    return
                try:
                    request = f"GET {self.urls[index][len(self.origin) :]}{self.head}"
                    self.answers[index] = await connection.get(
                        request.encode("latin-1"), self.timeout
                    )
                    if not connection.keep_alive:
                        connection.transport.close()
                        connection = None
                except (TimeoutError, Unusable):
                    # A stalled server, or answers this client does not read (chunked:
                    # GCS sends gzip-stored objects so): this worker stops, gcsfs takes over.
                    self.answered(index)
                    return
                except OSError:  # a reset: the next request on a new connection
                    connection.transport.abort()
                    connection = None
                self.answered(index)
        finally:
            if connection is not None:  # done, or cancelled mid-request
                connection.transport.abort()
