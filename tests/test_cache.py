"""--cache auto: decoded posters in memory when they fit, in a local file when not; the
memory cache held once, whatever the splits and epochs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from job.data import cache as job_cache
from job.data.cache import available_memory, choose_cache


def test_auto_keeps_posters_in_memory_while_they_fit_in_half_the_memory():
    films, size = 10_000, 64  # 122,880,000 bytes of uint8 posters: half of 245,760,000

    assert choose_cache("auto", films, size, available=245_760_000) == "memory"
    assert choose_cache("auto", films, size, available=245_759_999) == "disk"
    assert choose_cache("auto", films, size, available=0) == "disk"


def test_a_named_cache_is_kept_whatever_the_memory():
    for cache in ("memory", "disk", "none"):
        assert choose_cache(cache, 10**9, 64, available=0) == cache


def test_available_memory_is_at_most_what_the_host_has_available():
    meminfo = Path("/proc/meminfo").read_text().splitlines()
    host = next(int(line.split()[1]) * 1024 for line in meminfo if line.startswith("MemAvailable"))

    available = available_memory()

    assert 0 < available <= host * 1.1  # measured a moment apart: the host's figure moves


@pytest.mark.parametrize(
    "version, limit, usage, left",
    [
        ("v2", "300000000", "100000000", 200_000_000),  # a pod's limit, less than the host's
        ("v1", "300000000", "100000000", 200_000_000),
        ("v2", "300000000", "400000000", 0),  # over the limit already
        ("v2", "max", "100000000", None),  # no limit: the host's figure
    ],
)
def test_a_containers_memory_limit_bounds_what_is_available(
    version, limit, usage, left, tmp_path, monkeypatch
):
    files = (tmp_path / "memory.max", tmp_path / "memory.current")
    files[0].write_text(limit + "\n")
    files[1].write_text(usage + "\n")
    absent = (str(tmp_path / "none-a"), str(tmp_path / "none-b"))
    found = (str(files[0]), str(files[1]))
    monkeypatch.setattr(
        job_cache, "CGROUP_MEMORY", (found, absent) if version == "v2" else (absent, found)
    )
    host = job_cache.host_memory_available()
    assert host > 300_000_000  # (else the limit would not be the smaller)

    available = available_memory()

    if left is None:
        assert abs(available - host) < host * 0.1  # measured a moment apart
    else:
        assert available == left


def resident_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_the_memory_cache_is_one_tensor_over_the_decoded_array():
    from job.data.cache import aligned_empty, cache_posters

    array = aligned_empty((300, 64, 64, 3))
    array[:] = np.arange(300, dtype=np.uint8)[:, None, None, None]
    held = cache_posters(array, "memory", None)
    split = held[np.arange(300) % 3 == 0]  # a split: rows, not posters

    assert len(split) == 100 and split.tensor is held.tensor
    array[3] = 250  # the tensor is the array's memory, not a copy of it
    assert int(held.tensor[3, 0, 0, 0]) == 250
    unaligned = np.ones((301, 64, 64, 3), np.uint8)[1:]  # TensorFlow cannot use it in place
    assert int(cache_posters(unaligned, "memory", None).tensor[0, 0, 0, 0]) == 1


def test_epochs_over_the_memory_cache_do_not_copy_it():
    """tf.data's default rewrites serialized the captured cache at each iterator start:
    every epoch took the cache's size again in memory."""
    from job.data.cache import aligned_empty, cache_posters
    from job.data.pipeline import make_dataset

    films = 20_000  # 246 MB of 64x64 posters
    array = aligned_empty((films, 64, 64, 3))
    array[:] = 1
    held = cache_posters(array, "memory", None)
    labels = np.zeros((films, 1), np.float32)
    dataset = make_dataset(held, labels, 64, True, seed=0, uint8_posters=True)
    before = resident_mb()

    for _ in range(2):  # two epochs: two iterators
        batches = iter(dataset)
        next(batches)
        del batches

    assert resident_mb() - before < 100
