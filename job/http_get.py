"""Many small objects over kept-alive HTTP/1.1 connections: the posters a first epoch
fetches from a bucket.

gcsfs spent 0.23 ms of CPU on each poster it fetched (aiohttp, and its retry, header and
response layers): half of what decoding a poster costs, on the same cores. Here each of
`connections` connections sends one bare GET at a time and reads the Content-Length body
straight off the socket, all of them served by one selector loop on a thread of its own.
Fetching the real posters from fake-gcs-server on another core (/tmp scripts, 2026-11-26),
that took 0.036-0.045 ms of CPU a poster over plain HTTP and 0.057-0.063 ms over TLS (as
Google Cloud Storage is reached; 3,000 posters, 64 connections), against 0.074-0.086 ms
over TLS when the same requests went through asyncio's futures, tasks, timers and TLS
layer on gcsfs's event loop. Only the plain case is handled: 200 (the bytes) and 404
(missing). Any other answer, a chunked body, a broken or stalled connection leaves that
object to the caller, who fetches it again through gcsfs, with its retries, credential
refresh and errors (and a connection that met a stall or an answer it cannot read stops
asking).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import errno
import selectors
import socket
import ssl
import threading
import time
import urllib.parse

CONNECT_TIMEOUT_S = 30.0  # as gcsfs's (job/storage.py)


class Unusable(Exception):
    """An answer this client does not read (chunked, compressed, not HTTP); its object
    goes to gcsfs."""


RECEIVE = 256 * 1024  # bytes a read takes off a socket at most


class Connection:
    """One HTTP/1.1 connection's state: "closed" (no socket), "connecting", "handshake"
    (TLS), then "busy" with one GET at a time (`index`, the URL it is for, taken before
    connecting) or "idle"; "stopped" for good. Its answer is parsed as bytes arrive."""

    def __init__(self) -> None:
        self.sock: socket.socket | None = None
        self.state = "closed"
        self.index = -1
        self.address = 0  # which of the host's addresses it connects to
        self.buffer = bytearray()
        self.status = 0
        self.length: int | None = None  # the body's, once the head is in; None: to close
        self.head_read = False
        self.keep_alive = True
        self.since = time.monotonic()  # of the last byte, or of the connect

    def holds_index(self) -> bool:
        """Whether `index` is a URL this connection took and has not answered."""
        return self.state in ("connecting", "handshake", "busy")

    def ask(self, request: bytes) -> None:
        """Sends a GET (one at a time: the socket's buffer is empty, so it goes whole)."""
        self.buffer.clear()
        self.head_read, self.length, self.state = False, None, "busy"
        self.since = time.monotonic()
        if self.sock.send(request) != len(request):
            raise ConnectionError("request not sent whole")

    def receive(self, space: bytearray, view: memoryview) -> tuple[int, bytes] | None:
        """Reads what has arrived into `space` (the loop's one read buffer, `view` over it:
        no 256 KB object a read, and a body that arrives whole is copied once); the
        (status, body) answer once it is all in."""
        got = self.sock.recv_into(view)
        data: memoryview | bytes = view[:got]
        # TLS: a read returns one record at most, and what it decrypted beyond the read
        # waits in TLS, not in the socket: nothing would wake the loop for it.
        if isinstance(self.sock, ssl.SSLSocket) and self.sock.pending():
            data = bytes(data)
            while self.sock.pending():
                data += self.sock.recv(RECEIVE)
        self.since = time.monotonic()  # (a stall is a quiet connection, not a long one)
        if not data:  # closed by the server
            if self.head_read and self.length is None:  # a body that ends with the connection
                self.keep_alive = False
                return self.status, bytes(self.buffer)
            raise ConnectionError("connection closed mid-answer")
        if not self.head_read and not self.buffer and isinstance(data, memoryview):
            end = space.find(b"\r\n\r\n", 0, got)  # an answer's start: its head, here
            if end >= 0:
                self.read_head(space[:end])
                data = data[end + 4 :]  # (what came of the body: usually all of it)
                if self.length is not None and len(data) >= self.length:
                    return self.status, bytes(data[: self.length])
        self.buffer += data
        if not self.head_read:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return None
            self.read_head(self.buffer[:end])
            del self.buffer[: end + 4]
        if self.length is not None and len(self.buffer) >= self.length:
            with memoryview(self.buffer) as body:  # one copy (a shard can be 200 MB)
                return self.status, bytes(body[: self.length])
        return None

    def read_head(self, raw: bytearray) -> None:
        """The status line and the four fields this client reads (each looked up in the
        head, not every field parsed: a fifth of the client's CPU went there)."""
        try:
            self.parse_head(raw.decode("latin-1").lower())
        except (ValueError, IndexError) as error:  # not an HTTP answer we read
            raise Unusable(f"answer head: {error}") from None

    def parse_head(self, head: str) -> None:
        version, status = head.split(" ", 2)[:2]
        fields = head[head.find("\r\n") :] + "\r\n"  # "\r\nname: value\r\n..."
        self.status, self.head_read = int(status), True
        closing = field(fields, "connection") == "close"
        self.keep_alive = version == "http/1.1" and not closing
        encoding = field(fields, "content-encoding")
        if field(fields, "transfer-encoding") is not None or encoding not in (None, "identity"):
            raise Unusable(f"answer framing: {fields.strip()!r}")  # chunked or compressed
        length = field(fields, "content-length")
        if length is not None:
            self.length = int(length)
        else:
            self.keep_alive = False


def field(fields: str, name: str) -> str | None:
    """The value of the field `name` in `fields` (a lower-case head's lines, each after a
    CRLF), or None."""
    start = fields.find(f"\r\n{name}:")
    if start < 0:
        return None
    start += len(name) + 3
    return fields[start : fields.find("\r\n", start)].strip()


class Download:
    """GETs of many URLs on one host over `connections` connections with one request in
    flight each, taken in order and at most `ahead` chunks of `chunk` ahead of the chunks
    the caller has taken (`take`), so memory holds a few chunks, never the dataset.

    `start` runs it on a thread of its own; `take` waits for a chunk; `close` (or leaving
    the `with` block) stops it and closes its connections.
    """

    def __init__(
        self,
        urls: list[str],
        headers: dict[str, str],
        timeout: float,
        chunk: int,
        ahead: int,
        connections: int,
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
        self.next = 0  # the next index a connection takes
        self.limit = min(len(urls), ahead * chunk)  # connections take indexes below this
        self.unanswered = len(urls)
        self.running = 0  # connections that have not stopped (set by run)
        self.waiting: list[Connection] = []  # idle (or closed) until the caller takes more
        self.stopping = False
        self.selector = selectors.DefaultSelector()
        self.wake_reader, self.wake_writer = socket.socketpair()  # take/close -> the loop
        self.wake_writer.setblocking(False)
        self.failure: Exception | None = None  # what broke the loop, if anything did
        self.thread = threading.Thread(target=self.serve, name="http_get", daemon=True)

    def start(self) -> Download:
        self.thread.start()
        return self

    def __enter__(self) -> Download:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def take(self, number: int) -> list:
        """Chunk `number`'s (status, body) answers, None where no answer came (connection
        failed, or stalled for `timeout` s; chunked body); waits until all are in."""
        self.chunks[number].result()
        self.limit = max(self.limit, min(len(self.urls), (number + 1 + self.ahead) * self.chunk))
        self.wake()
        start = number * self.chunk
        answers = self.answers[start : start + self.chunk]
        self.answers[start : start + len(answers)] = [None] * len(answers)  # not held here
        return answers

    def close(self) -> None:
        """Stops asking and closes every connection (the caller is done, or gave up)."""
        self.stopping = True
        if self.thread.ident is None:  # never started
            self.selector.close()
        else:
            self.wake()
            self.thread.join()
        self.wake_reader.close()
        self.wake_writer.close()

    def wake(self) -> None:
        """Wakes the loop: a byte it reads. Bytes left after it ended are harmless; once
        they fill the socket, more are not needed (and must not block the caller)."""
        with contextlib.suppress(BlockingIOError):
            self.wake_writer.send(b"w")

    def answered(self, index: int) -> None:
        self.unanswered -= 1
        number = index // self.chunk
        self.left[number] -= 1
        if self.left[number] == 0:  # (exactly once a chunk)
            self.chunks[number].set_result(None)

    def serve(self) -> None:
        """The thread: the loop; whatever breaks it is kept for the caller to report (the
        objects still arrive, through gcsfs)."""
        try:
            self.run()
        except Exception as error:  # (the thread's edge: nothing above it to catch it)
            self.failure = error

    def run(self) -> None:
        """The loop: connections opened, asked, read, checked for stalls; until every URL
        is answered, every connection has stopped, or `close`."""
        connections = [Connection() for _ in range(self.workers)]
        self.space = bytearray(RECEIVE)  # every read lands here first (Connection.receive)
        self.view = memoryview(self.space)
        self.running = len(connections)
        try:
            self.selector.register(self.wake_reader, selectors.EVENT_READ)
            self.context = ssl.create_default_context() if self.host.scheme == "https" else None
            port = self.host.port or (443 if self.context else 80)
            try:
                found = socket.getaddrinfo(self.host.hostname, port, type=socket.SOCK_STREAM)
            except OSError:  # no address for the host: everything goes to gcsfs
                return
            # (family, type, protocol, address) of each, in the resolver's order; the
            # connections use the first until a connect to it fails (connect_failed)
            self.addresses = list(dict.fromkeys((f, k, p, a) for f, k, p, _, a in found))
            self.current = 0
            for connection in connections:
                self.ask_next(connection)  # each takes a URL, then connects
            tick = min(self.timeout, CONNECT_TIMEOUT_S) / 4
            checked = time.monotonic()
            while self.unanswered and self.running and not self.stopping:
                for key, _ in self.selector.select(tick):
                    if key.data is not None:
                        self.step(key.data)
                        continue
                    self.wake_reader.recv(4096)  # woken: more allowed (take), or close
                    waiting, self.waiting = self.waiting, []
                    for connection in waiting:
                        self.ask_next(connection)
                if time.monotonic() - checked > tick:
                    checked = time.monotonic()
                    for connection in connections:
                        self.check(connection, checked)
        finally:
            for connection in connections:  # done, or stopped mid-request
                self.stop(connection)
            for index in range(self.next, len(self.urls)):  # what is left gets no answer
                self.answered(index)
            self.next = len(self.urls)
            self.selector.close()  # (the wake sockets: closed by `close`, after this)

    def ask_next(self, connection: Connection) -> None:
        """The next URL on `connection` (connecting first if it has no socket), if it may
        be asked for yet; else it waits for the caller (`take`)."""
        if self.next >= min(self.limit, len(self.urls)):  # far enough ahead: wait
            if connection.state != "closed":
                connection.state = "idle"
            self.waiting.append(connection)
            return
        connection.index, self.next = self.next, self.next + 1
        if connection.state == "closed":
            self.connect(connection)  # asks once connected
        else:
            self.send(connection)

    def send(self, connection: Connection) -> None:
        request = f"GET {self.urls[connection.index][len(self.origin) :]}{self.head}"
        try:
            connection.ask(request.encode("latin-1"))
        except OSError:  # (ssl.SSLError too) closed meanwhile: to gcsfs, and reconnect
            self.answered(connection.index)
            self.reopen(connection)

    def connect(self, connection: Connection) -> None:
        """Starts the connection's connect to the current address (writable once made)."""
        family, kind, protocol, address = self.addresses[self.current]
        connection.address, connection.since = self.current, time.monotonic()
        connection.state = "connecting"
        try:
            connection.sock = socket.socket(family, kind, protocol)
        except OSError:  # no socket to be had (out of file handles)
            return self.stop(connection)  # its URL goes to gcsfs; the others go on
        connection.sock.setblocking(False)
        if family in (socket.AF_INET, socket.AF_INET6):  # each request out at once
            connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        error = connection.sock.connect_ex(address)
        if error not in (0, errno.EINPROGRESS):  # failed at once (refused, no route)
            connection.sock.close()
            connection.sock = None
            return self.connect_failed(connection)
        self.selector.register(connection.sock, selectors.EVENT_WRITE, connection)
        return None

    def connect_failed(self, connection: Connection) -> None:
        """The host's next address, if it has one more (for every connection from then
        on: an IPv6 address first, say, on a node with no IPv6 route), keeping the
        connection's URL; else the connection stops."""
        if connection.address == self.current and self.current + 1 < len(self.addresses):
            self.current += 1
        if connection.address == self.current:  # (no other address to try)
            return self.stop(connection)
        self.drop(connection)
        return self.connect(connection)

    def step(self, connection: Connection) -> None:
        """The connection's socket is ready: go on from its state."""
        try:
            if connection.state == "connecting":
                if connection.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                    return self.connect_failed(connection)
                if not self.context:
                    return self.connected(connection)
                self.selector.unregister(connection.sock)
                connection.sock = self.context.wrap_socket(
                    connection.sock,
                    server_hostname=self.host.hostname,
                    do_handshake_on_connect=False,
                )
                self.selector.register(connection.sock, selectors.EVENT_WRITE, connection)
                connection.state = "handshake"
            if connection.state == "handshake":
                try:
                    connection.sock.do_handshake()
                except ssl.SSLWantReadError:
                    self.selector.modify(connection.sock, selectors.EVENT_READ, connection)
                except ssl.SSLWantWriteError:
                    self.selector.modify(connection.sock, selectors.EVENT_WRITE, connection)
                else:
                    self.connected(connection)
                return None
            if connection.state == "idle":  # the server closed it while unused (b"",
                with contextlib.suppress(OSError):  # a reset; anything else: unasked for)
                    connection.sock.recv(RECEIVE)
                self.drop(connection)  # (still waiting: reopened when there is work)
                return None
            answer = connection.receive(self.space, self.view)
        except (ssl.SSLWantReadError, BlockingIOError):
            return None
        except Unusable:  # answers this client does not read (chunked: GCS sends
            return self.stop(connection)  # gzip-stored objects so): this one stops
        except OSError:  # (ssl.SSLError too)
            if connection.state != "busy":  # could not connect: the others go on
                return self.stop(connection)
            self.answered(connection.index)  # a reset: it goes to gcsfs, and the
            return self.reopen(connection)  # next request on a new connection
        if answer is None:
            return None
        self.answers[connection.index] = answer
        self.answered(connection.index)
        if connection.keep_alive:
            return self.ask_next(connection)
        return self.reopen(connection)

    def connected(self, connection: Connection) -> None:
        self.selector.modify(connection.sock, selectors.EVENT_READ, connection)
        self.send(connection)  # the URL it took before connecting

    def reopen(self, connection: Connection) -> None:
        """Closes the connection; a new one takes its place when there is work for it."""
        self.drop(connection)
        self.ask_next(connection)

    def check(self, connection: Connection, now: float) -> None:
        """A connection quiet for too long stops: an answer given up on (`timeout`) or
        a connect (CONNECT_TIMEOUT_S); its request goes to gcsfs."""
        if connection.state == "busy" and now - connection.since > self.timeout:
            self.stop(connection)
        elif connection.state == "connecting" and now - connection.since > CONNECT_TIMEOUT_S:
            self.connect_failed(connection)
        elif connection.state == "handshake" and now - connection.since > CONNECT_TIMEOUT_S:
            self.stop(connection)

    def stop(self, connection: Connection) -> None:
        """The connection asks no more (the URL it took, if any, goes to gcsfs)."""
        if connection.holds_index():
            self.answered(connection.index)
        self.drop(connection)
        connection.state = "stopped"
        self.running -= 1

    def drop(self, connection: Connection) -> None:
        """Closes the connection's socket, if it has one: "closed" now."""
        if connection.sock is not None:
            self.selector.unregister(connection.sock)
            connection.sock.close()
            connection.sock = None
        if connection.state != "stopped":
            connection.state = "closed"
