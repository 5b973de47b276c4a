"""Many objects read at once: posters for a first epoch, prepared shards, report images.

From a bucket, bare GETs over kept-alive connections (job/http_get.py), with what they
do not bring back fetched again through gcsfs; from a local folder, plain reads; from
any other fsspec file system (memory://), gcsfs-style `cat_ranges` calls.
"""

from __future__ import annotations

import logging
import os
import posixpath
import resource
import urllib.parse
from collections.abc import Iterator

import fsspec
import fsspec.asyn
from fsspec.implementations.local import LocalFileSystem

from job import http_get
from job.storage import filesystem, read_timeout_s, retrying

log = logging.getLogger(__name__)

# Objects fetched per chunk, and chunks in flight ahead of the one being used.
FETCH_CHUNK = 128
FETCH_AHEAD = 8


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


def fetch_many(urls: list[str]) -> list[bytes | None]:
    """Fetch many small objects with many requests in flight; None where one is missing."""
    return [blob for chunk in fetch_chunks(urls) for blob in chunk]


def fetch_chunks(urls: list[str], chunk: int = FETCH_CHUNK) -> Iterator[list[bytes | None]]:
    """The objects at `urls`, `chunk` at a time, in order; None where one is missing.

    From a bucket, the requests of FETCH_AHEAD chunks are in flight while the caller works
    on the one it has (a bucket answers one request in 20-50 ms, so one at a time would be
    a thousand times too slow): the next chunks download while this one decodes.
    """
    if not urls:
        return
    fs, _ = filesystem(urls[0])
    paths = [fs._strip_protocol(url) for url in urls]
    starts = range(0, len(paths), chunk)
    if isinstance(fs, LocalFileSystem):
        # Plain reads: 20 us of CPU a 25 KB poster, against 30-37 us through cat_ranges,
        # which the decoding threads feel on a first epoch (scripts/bench_pipeline.py).
        where = posixpath.dirname(urls[0])
        for start in starts:
            part = paths[start : start + chunk]
            yield retrying(f"read {len(part)} files from", where, lambda: read_files(part))  # noqa: B023
    elif type(fs).__name__ == "GCSFileSystem":  # bare GETs first (job/http_get.py)
        yield from _fetch_gcs(fs, paths, urls, chunk)
    else:  # any other fsspec file system (memory://): one cat_ranges call a chunk
        for start in starts:
            yield _fetch_chunk(fs, paths[start : start + chunk], urls[start])


def _fetch_gcs(fs: fsspec.AbstractFileSystem, paths: list[str], urls: list[str], chunk: int):
    """fetch_chunks from a bucket, by one http_get.Download; what its connections did not
    bring back (an answer other than 200 or 404, a failed connection) is fetched again
    through gcsfs, with its retries and errors."""
    # gcsfs's own request headers (its credentials, refreshed if due: a token lasts an
    # hour; a 401 after that is fetched again through gcsfs, which refreshes it).
    headers = retrying("authorize for", urls[0], lambda: fs._get_headers(None))
    params = fs._get_params({})  # userProject for a requester-pays bucket
    query = f"&{urllib.parse.urlencode(params)}" if params else ""
    links = [fs.url(path) + query for path in paths]
    with http_get.Download(
        links, headers, read_timeout_s(), chunk, FETCH_AHEAD, CONNECTIONS
    ) as download:
        for number, start in enumerate(range(0, len(paths), chunk)):
            answers = download.take(number)
            blobs = [answer[1] if answer and answer[0] == 200 else None for answer in answers]
            again = [i for i, a in enumerate(answers) if not a or a[0] not in (200, 404)]
            if again:  # (each an object this chunk had, not in the bucket's plain answers)
                log.debug("storage: %d objects fetched again through gcsfs", len(again))
                part = [paths[start + i] for i in again]
                for index, blob in zip(again, _fetch_chunk(fs, part, urls[start]), strict=True):
                    blobs[index] = blob
            yield blobs
    # (done, or the caller stopped early: either way the download's connections are closed)
    if download.failure is not None:  # every object still arrived; but say why
        log.warning("storage: bare downloads failed: %r", download.failure)


def read_files(paths: list[str]) -> list[bytes | None]:
    """Local files' bytes; None where one is missing."""
    blobs: list[bytes | None] = []
    for path in paths:
        try:
            with open(path, "rb") as file:
                blobs.append(file.read())
        except FileNotFoundError:
            blobs.append(None)
    return blobs


def _fetch_chunk(fs: fsspec.AbstractFileSystem, paths: list[str], first_url: str):
    """One `cat_ranges` call; the paths that failed transiently are fetched again."""
    answers: list[object] = [None] * len(paths)
    pending = list(range(len(paths)))

    def attempt() -> None:
        nonlocal pending
        got = fs.cat_ranges([paths[i] for i in pending], None, None, on_error="return")
        failed = []
        for index, answer in zip(pending, got, strict=True):
            answers[index] = answer
            if isinstance(answer, BaseException) and not isinstance(answer, FileNotFoundError):
                failed.append(index)
        pending = failed
        if failed:
            raise answers[failed[0]]  # retried when transient

    retrying(f"fetch {len(paths)} objects from", posixpath.dirname(first_url), attempt)
    return [None if isinstance(a, FileNotFoundError) else a for a in answers]
