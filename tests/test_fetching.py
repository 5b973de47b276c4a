"""Fetching many objects from a bucket through gcsfs, chunks in flight ahead of the one
being used (job/storage/fetching.py): in order, missing objects as None, faults retried, a fetch
that keeps failing raised (never taken for missing objects)."""

from __future__ import annotations

import logging
import random

import fastbackoff
import pytest
from support.faultproxy import FaultProxy
from support.gcs_server import use_storage_endpoint

from job import storage
from job.storage import fetching


def objects_in(bucket: str, count: int) -> dict[str, bytes]:
    """`count` objects of different sizes written to `bucket`: {url: bytes}."""
    objects = {f"{bucket}/posters/{i}.jpg": bytes([i % 251]) * (500 + 61 * i) for i in range(count)}
    for url, data in objects.items():
        storage.write_bytes(url, data)
    return objects


@pytest.fixture
def through_proxy(gcs_server):
    """A FaultProxy in front of the test server, gcsfs pointed at it for the test."""
    proxies: list[FaultProxy] = []

    def start(**options) -> FaultProxy:
        proxy = FaultProxy(gcs_server, **options).__enter__()
        proxies.append(proxy)
        use_storage_endpoint(proxy.url)
        return proxy

    yield start
    use_storage_endpoint(gcs_server)
    for proxy in proxies:
        proxy.__exit__()


def test_fetch_many_from_a_bucket_brings_every_object_in_order(bucket, caplog):
    objects = objects_in(bucket, fetching.FETCH_CHUNK * 2 + 5)  # three chunks, one partial
    urls = [*objects, f"{bucket}/posters/missing.jpg"]
    with caplog.at_level(logging.DEBUG, logger="job.storage.fetching"):
        blobs = fetching.fetch_many(urls)
    assert blobs == [*objects.values(), None]  # in order; a missing object is None
    assert "fetched again" not in caplog.text  # 200s and a 404: nothing failed


def test_faults_are_retried_and_leave_the_random_state_alone(bucket, through_proxy):
    objects = objects_in(bucket, 200)
    urls = [*objects, f"{bucket}/posters/missing.jpg"]
    proxy = through_proxy(rates={"503": 0.05, "429": 0.05, "reset": 0.05}, seed=5)
    random.seed(3)
    expected = random.getstate()
    blobs = fetching.fetch_many(urls)
    assert blobs == [*objects.values(), None]
    assert all(proxy.counts[fault] > 0 for fault in ("503", "429", "reset")), proxy.counts
    # gcsfs drew its retries' jitter from it on its own thread; put back
    assert random.getstate() == expected


@pytest.mark.slow  # gcsfs's own retries, then the job's
def test_a_fetch_that_keeps_failing_is_raised_not_taken_for_missing(
    bucket, through_proxy, monkeypatch
):
    """The third chunk's objects answer 503 for good: the chunks before it arrive, then
    one line naming what failed (a None would drop the rest of the films as having no
    poster)."""
    monkeypatch.setenv("GENRE_JOB_STORAGE_RETRY_S", "2")
    fastbackoff.install(monkeypatch)  # gcsfs's tries, without their 1-16 s waits
    first = objects_in(bucket, fetching.FETCH_CHUNK * 2)
    late = {url.replace("/posters/", "/posters/late/"): data for url, data in first.items()}
    for url, data in late.items():
        storage.write_bytes(url, data)
    urls = [*first, *list(late)[: fetching.FETCH_CHUNK]]
    proxy = through_proxy()
    proxy.fail_reads_after = ("posters%2Flate%2F", 0)
    chunks = fetching.fetch_chunks(urls)
    assert next(chunks) + next(chunks) == list(first.values())
    with pytest.raises(storage.StorageError) as raised:
        next(chunks)
    expected = f"fetch {fetching.FETCH_CHUNK} objects from {bucket}/posters/late failed: "
    assert str(raised.value) == expected + "HttpError: Service Unavailable, 503"
    assert proxy.counts["503"] >= fetching.FETCH_CHUNK


def test_fetch_chunks_stopped_early_then_fetched_again(bucket, caplog):
    objects = objects_in(bucket, fetching.FETCH_CHUNK * 3)
    chunks = fetching.fetch_chunks(list(objects))
    assert next(chunks) == list(objects.values())[: fetching.FETCH_CHUNK]
    with caplog.at_level(logging.DEBUG, logger="job.storage.fetching"):
        chunks.close()  # the caller stopped (an error): the chunks in flight are cancelled
        assert fetching.fetch_many(list(objects)[-5:]) == list(objects.values())[-5:]
    assert caplog.text == ""  # nothing failed, nothing fetched again
