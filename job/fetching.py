"""Many objects read at once: posters for a first epoch, prepared shards, report images.

From a bucket (any asynchronous fsspec file system: gcsfs), chunked `_cat_ranges` calls
on fsspec's event loop, FETCH_AHEAD chunks in flight ahead of the one the caller works on;
from a local folder, plain reads; from any other fsspec file system (memory://), one
`cat_ranges` call a chunk. What failed is fetched again with retries, or raised.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import posixpath
import random
from collections.abc import Iterator

import fsspec
import fsspec.asyn
from fsspec.implementations.local import LocalFileSystem

from job.storage import filesystem, retrying

log = logging.getLogger(__name__)

# Objects a chunk, and chunks in flight ahead of the one being used: about twice the
# connections gcsfs's HTTP client keeps (aiohttp's 100), so they never idle between chunks;
# more only queue for a connection and cost CPU (docs/performance.md, "Storage").
FETCH_CHUNK = 128
FETCH_AHEAD = 2


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
        # Plain reads: cat_ranges costs more CPU a file, which the decoding threads feel.
        where = posixpath.dirname(urls[0])
        for start in starts:
            part = paths[start : start + chunk]
            yield retrying(f"read {len(part)} files from", where, lambda: read_files(part))  # noqa: B023
    elif isinstance(fs, fsspec.asyn.AsyncFileSystem):
        yield from _fetch_ahead(fs, paths, urls, chunk)
    else:  # any other fsspec file system (memory://): one cat_ranges call a chunk
        for start in starts:
            yield _fetch_chunk(fs, paths[start : start + chunk], urls[start])


def _fetch_ahead(fs: fsspec.asyn.AsyncFileSystem, paths: list[str], urls: list[str], chunk: int):
    """fetch_chunks from an asynchronous file system: each chunk one `_cat_ranges` call on
    its event loop, FETCH_AHEAD of them submitted ahead; a chunk's objects that failed
    (after the file system's own retries) are fetched again through _fetch_chunk."""
    starts = list(range(0, len(paths), chunk))

    def submit(start: int):
        calls = fs._cat_ranges(paths[start : start + chunk], None, None, batch_size=chunk)
        return asyncio.run_coroutine_threadsafe(calls, fs.loop)

    # gcsfs draws its back-off jitter from Python's global random state on its own thread,
    # where `retrying` cannot put it back: a retry must not change the trained model.
    state = random.getstate()
    pending = collections.deque(submit(start) for start in starts[:FETCH_AHEAD])
    try:
        for number, start in enumerate(starts):
            try:
                answers = list(pending.popleft().result())
            except Exception as error:  # (the whole call failed: every object again)
                log.debug("storage: a chunk's fetch failed: %r", error)
                answers = [error] * min(chunk, len(paths) - start)
            if number + FETCH_AHEAD < len(starts):
                pending.append(submit(starts[number + FETCH_AHEAD]))
            again = [i for i, answer in enumerate(answers) if _failed(answer)]
            if again:
                log.debug("storage: %d objects fetched again", len(again))
                part = [paths[start + i] for i in again]
                for index, blob in zip(again, _fetch_chunk(fs, part, urls[start]), strict=True):
                    answers[index] = blob
            yield [None if isinstance(a, FileNotFoundError) else a for a in answers]
    finally:  # done, or the caller stopped early (an error)
        for future in pending:
            future.cancel()
        random.setstate(state)


def _failed(answer: object) -> bool:
    """Whether a `cat_ranges` answer is an error other than a missing object."""
    return isinstance(answer, BaseException) and not isinstance(answer, FileNotFoundError)


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
            if _failed(answer):
                failed.append(index)
        pending = failed
        if failed:
            raise answers[failed[0]]  # retried when transient

    retrying(f"fetch {len(paths)} objects from", posixpath.dirname(first_url), attempt)
    return [None if isinstance(a, FileNotFoundError) else a for a in answers]
