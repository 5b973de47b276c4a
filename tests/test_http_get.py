"""Fetching many objects from a bucket over bare HTTP/1.1 connections (job/http_get.py),
and what that path leaves to gcsfs (fetching.fetch_many)."""

from __future__ import annotations

import http.server
import logging
import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time

import pytest
from benchlib import use_storage_endpoint
from faultproxy import FaultProxy

from job import fetching, http_get, storage

BODIES = {f"/o/{i}": bytes([i % 251]) * (1000 + 97 * i) for i in range(40)}


def objects_in(bucket: str, count: int) -> dict[str, bytes]:
    """`count` objects of different sizes written to `bucket`: {url: bytes}."""
    objects = {f"{bucket}/posters/{i}.jpg": bytes([i % 251]) * (500 + 61 * i) for i in range(count)}
    for url, data in objects.items():
        storage.write_bytes(url, data)
    return objects


def test_fetch_many_from_a_bucket_brings_every_object_over_bare_connections(bucket, caplog):
    objects = objects_in(bucket, fetching.FETCH_CHUNK * 2 + 5)  # three chunks, one partial
    urls = [*objects, f"{bucket}/posters/missing.jpg"]
    with caplog.at_level(logging.DEBUG, logger="job.fetching"):
        blobs = fetching.fetch_many(urls)
    assert blobs == [*objects.values(), None]  # in order; a missing object is None
    assert "fetched again through gcsfs" not in caplog.text  # 200s and a 404: none left over


def test_faults_on_bare_connections_are_fetched_again_through_gcsfs(bucket, gcs_server, caplog):
    objects = objects_in(bucket, 200)
    urls = [*objects, f"{bucket}/posters/missing.jpg"]
    rates = {"503": 0.05, "429": 0.05, "reset": 0.05, "reset_after": 0.05}
    try:
        with FaultProxy(gcs_server, rates=rates, seed=5) as proxy:
            use_storage_endpoint(proxy.url)
            with caplog.at_level(logging.DEBUG, logger="job.fetching"):
                blobs = fetching.fetch_many(urls)
    finally:
        use_storage_endpoint(gcs_server)
    assert blobs == [*objects.values(), None]
    assert all(proxy.counts[fault] > 0 for fault in rates), proxy.counts
    assert "fetched again through gcsfs" in caplog.text


class Server:
    """A stdlib HTTP server on 127.0.0.1 answering BODIES, in the given HTTP version, with
    or without Content-Length, or chunked; counts the connections it accepted."""

    def __init__(
        self,
        version: str,
        framing: str,
        tls: tuple[str, str] | None = None,
        idle_timeout: float | None = None,
    ) -> None:
        served = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = version
            timeout = idle_timeout  # a kept-alive connection quiet this long is closed

            def setup(self) -> None:
                served.connections += 1
                super().setup()

            def finish(self) -> None:
                super().finish()
                served.closed += 1

            def do_GET(self) -> None:
                served.requests += 1
                body = BODIES.get(self.path)
                self.send_response(200 if body else 404)
                body = body or b"not found"
                if framing == "chunked":
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    self.wfile.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
                    return
                if framing in ("length", "trickle"):
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if framing == "trickle":  # a slow large object: a tenth at a time
                    for start in range(0, len(body), len(body) // 10 + 1):
                        self.wfile.write(body[start : start + len(body) // 10 + 1])
                        self.wfile.flush()
                        time.sleep(0.1)
                    return
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.connections = self.requests = self.closed = 0
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        scheme = "http"
        if tls:  # (certificate, key) files
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
            scheme = "https"
        self.url = f"{scheme}://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def get_all(url: str, paths: list[str], timeout: float = 10.0, connections: int = 4):
    """(status, body) answers of a Download of `paths` on `url`, in chunks of 3."""
    urls = [url + path for path in paths]
    with http_get.Download(urls, {"User-Agent": "test"}, timeout, 3, 2, connections) as download:
        return [
            answer for number in range(len(download.chunks)) for answer in download.take(number)
        ]


@pytest.mark.parametrize(
    ("version", "framing"),
    [("HTTP/1.1", "length"), ("HTTP/1.0", "length"), ("HTTP/1.0", "until-close")],
)
def test_pool_reads_kept_alive_closed_and_unframed_answers(version, framing):
    server = Server(version, framing)
    try:
        answers = get_all(server.url, [*BODIES, "/o/missing"])
    finally:
        server.close()
    assert answers == [(200, body) for body in BODIES.values()] + [(404, b"not found")]
    # Kept alive: one connection a worker; HTTP/1.0 closes after each answer.
    assert server.connections == (4 if version == "HTTP/1.1" else len(BODIES) + 1)


def test_pool_leaves_chunked_answers_to_the_caller_and_stops_asking():
    server = Server("HTTP/1.1", "chunked")
    try:
        answers = get_all(server.url, list(BODIES))
    finally:
        server.close()
    assert answers == [None] * len(BODIES)
    assert server.requests == 4  # one a worker: the rest go straight to gcsfs


def test_taking_chunks_after_every_connection_stopped_never_blocks():
    """Every connection stopped at its first (chunked) answer, so the loop has ended; the
    caller still takes its 2,000 chunks (each fetched through gcsfs in the job), and each
    take wakes a loop that no longer reads: that must not fill a socket and block."""
    server = Server("HTTP/1.1", "chunked")
    urls = [server.url + "/o/1"] * 2000
    try:
        with http_get.Download(urls, {}, 10.0, chunk=1, ahead=2, connections=4) as download:
            answers = [answer for number in range(2000) for answer in download.take(number)]
    finally:
        server.close()
    assert answers == [None] * 2000
    assert server.requests == 4


def test_pool_gives_up_on_a_stalled_server_after_its_timeout():
    listener = socket.create_server(("127.0.0.1", 0))  # accepts (the backlog), never answers
    started = time.monotonic()
    try:
        answers = get_all(f"http://127.0.0.1:{listener.getsockname()[1]}", list(BODIES), 0.5)
    finally:
        listener.close()
    assert answers == [None] * len(BODIES)
    assert time.monotonic() - started < 5  # a timeout per worker, not per object


def test_pool_waits_on_a_slow_answer_whose_bytes_keep_coming():
    server = Server("HTTP/1.1", "trickle")
    try:  # each answer takes 1 s, its parts 0.1 s apart: no quiet spell of 0.5 s
        answers = get_all(server.url, ["/o/39"], timeout=0.5)
    finally:
        server.close()
    assert answers == [(200, BODIES["/o/39"])]


def test_pool_answers_none_when_nothing_listens():
    with socket.create_server(("127.0.0.1", 0)) as placeholder:
        port = placeholder.getsockname()[1]  # closed again: nothing listens there now
    assert get_all(f"http://127.0.0.1:{port}", list(BODIES)[:5]) == [None] * 5


def test_pool_moves_to_the_hosts_next_address_when_a_connect_fails(monkeypatch):
    """A host name whose first address takes no connections (an IPv6 address on a node
    with no IPv6 route, say): the connections move to its next address, and every
    object arrives over them, none left to gcsfs."""
    server = Server("HTTP/1.1", "length")
    port = int(server.url.rsplit(":", 1)[1])
    resolve = socket.getaddrinfo

    def two_addresses(host, *args, **kwargs):
        if host != "bucket.test":
            return resolve(host, *args, **kwargs)
        dead, alive = ("127.0.0.2", port), ("127.0.0.1", port)  # nothing on 127.0.0.2
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", where) for where in (dead, alive)]

    monkeypatch.setattr(socket, "getaddrinfo", two_addresses)
    try:
        answers = get_all(f"http://bucket.test:{port}", [*BODIES, "/o/missing"])
    finally:
        server.close()
    assert answers == [(200, body) for body in BODIES.values()] + [(404, b"not found")]
    assert server.connections == 4


@pytest.mark.skipif(not shutil.which("openssl"), reason="no openssl command to make a certificate")
def test_pool_speaks_tls_and_checks_the_certificate(tmp_path, monkeypatch):
    certificate, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
        + ["-keyout", str(key), "-out", str(certificate), "-subj", "/CN=127.0.0.1"]
        + ["-addext", "subjectAltName=IP:127.0.0.1"],
        check=True,
        capture_output=True,
    )
    server = Server("HTTP/1.1", "length", tls=(str(certificate), str(key)))
    try:
        # Not a certificate this client trusts: no answers (gcsfs then fails, with why).
        assert get_all(server.url, list(BODIES)[:5]) == [None] * 5
        monkeypatch.setenv("SSL_CERT_FILE", str(certificate))  # now it is
        answers = get_all(server.url, [*BODIES, "/o/missing"])
        # Reads smaller than a TLS record: what TLS decrypted beyond a read is read too
        # (the socket has nothing left to wake the loop for).
        monkeypatch.setattr(http_get, "RECEIVE", 1000)
        small_reads = get_all(server.url, list(BODIES)[-3:])
    finally:
        server.close()
    assert answers == [(200, body) for body in BODIES.values()] + [(404, b"not found")]
    assert small_reads == [(200, body) for body in list(BODIES.values())[-3:]]


def test_download_stays_a_few_chunks_ahead_of_the_caller():
    server = Server("HTTP/1.1", "length")
    urls = [server.url + path for path in BODIES]
    download = http_get.Download(urls, {}, 10.0, chunk=3, ahead=2, connections=4).start()
    try:
        first = download.take(0)
        time.sleep(0.3)  # the caller busy with chunk 0: the connections wait
        requested = server.requests
        download.close()  # the caller stopped: the connections close
        time.sleep(0.3)
    finally:
        server.close()
    assert first == [(200, body) for body in list(BODIES.values())[:3]]
    assert download.answers[:3] == [None] * 3  # taken: no longer held
    assert requested == 9  # chunk 0 and the 2 ahead of it, not the 40 objects
    assert server.connections == 4 and server.closed == 4


def test_fetch_chunks_stopped_early_then_fetched_again(bucket, caplog):
    objects = objects_in(bucket, fetching.FETCH_CHUNK * 3)
    chunks = fetching.fetch_chunks(list(objects))
    assert next(chunks) == list(objects.values())[: fetching.FETCH_CHUNK]
    with caplog.at_level(logging.DEBUG, logger="job.fetching"):
        chunks.close()  # the caller stopped (an error): the download is cancelled
        assert fetching.fetch_many(list(objects)[-5:]) == list(objects.values())[-5:]
    assert caplog.text == ""  # nothing failed, nothing fetched again


def test_download_reconnects_when_the_server_closed_an_idle_connection():
    server = Server("HTTP/1.1", "length", idle_timeout=0.2)
    urls = [server.url + path for path in BODIES]
    started = time.monotonic()
    try:
        with http_get.Download(urls, {}, 5.0, chunk=4, ahead=1, connections=2) as download:
            answers = download.take(0)
            time.sleep(0.6)  # the caller busy: the server closes the idle connections
            for number in range(1, len(download.chunks)):
                answers += download.take(number)
    finally:
        server.close()
    assert answers == [(200, body) for body in BODIES.values()]
    assert server.requests == len(BODIES)  # none lost on a closed connection
    assert time.monotonic() - started < 3  # no request waited for its timeout


def test_connections_stay_within_the_file_handles_the_process_may_open(bucket, gcs_server):
    """A process allowed 128 file handles opens 32 connections (a quarter), leaving the
    rest for whatever else opens files meanwhile, and still fetches every object over
    bare connections."""
    objects = objects_in(bucket, 300)
    script = f"""
import logging, resource, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (128, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
from job import fetching
blobs = fetching.fetch_many({list(objects)!r})
print(fetching.CONNECTIONS, sum(blob is not None for blob in blobs))
"""
    env = {**os.environ, "STORAGE_EMULATOR_HOST": gcs_server}
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["32", "300"]
    assert "fetched again through gcsfs" not in result.stderr


def test_connections_without_a_file_handle_leave_their_urls_and_the_rest_go_on(bucket, gcs_server):
    """Out of file handles mid-way (a process near its limit): the connections that get
    no socket give their URL up (None: the caller fetches it through gcsfs), the others
    fetch the rest, and the download ends instead of waiting for answers never asked."""
    objects = objects_in(bucket, 40)
    links = [
        f"{gcs_server}/download/storage/v1/b/{bucket[5:]}/o/posters%2F{i}.jpg?alt=media"
        for i in range(40)
    ]
    script = f"""
import os, resource
from job import http_get
download = http_get.Download({links!r}, {{}}, 10.0, chunk=8, ahead=10, connections=32)
handles, most = len(os.listdir("/proc/self/fd")), resource.getrlimit(resource.RLIMIT_NOFILE)[1]
resource.setrlimit(resource.RLIMIT_NOFILE, (handles + 4, most))  # 4 more: 4 connections
with download:
    answers = [answer for number in range(5) for answer in download.take(number)]
print(sum(answer is None for answer in answers))
print(*[answer[1].hex() for answer in answers if answer is not None])
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr[-2000:]
    missing, fetched = result.stdout.splitlines()
    bodies = [bytes.fromhex(body) for body in fetched.split()]
    assert 0 < int(missing) < 40 and int(missing) + len(bodies) == 40
    assert set(bodies) <= set(objects.values())
