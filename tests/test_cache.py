"""--cache auto: decoded posters in memory when they fit, in a local file when not."""

from __future__ import annotations

from pathlib import Path

from job.cache import MEMORY_SHARE, available_memory, choose_cache


def test_auto_keeps_posters_in_memory_while_they_fit_in_its_share():
    films, size = 10_000, 64
    needed = films * size * size * 3  # 123 MB of uint8 posters

    assert choose_cache("auto", films, size, available=int(needed / MEMORY_SHARE)) == "memory"
    assert choose_cache("auto", films, size, available=int(needed / MEMORY_SHARE) - 1) == "disk"
    assert choose_cache("auto", films, size, available=0) == "disk"


def test_a_named_cache_is_kept_whatever_the_memory():
    for cache in ("memory", "disk", "none"):
        assert choose_cache(cache, 10**9, 64, available=0) == cache


def test_available_memory_is_at_most_what_the_host_has_available():
    meminfo = Path("/proc/meminfo").read_text().splitlines()
    host = next(int(line.split()[1]) * 1024 for line in meminfo if line.startswith("MemAvailable"))

    available = available_memory()

    assert 0 < available <= host * 1.1  # measured a moment apart: the host's figure moves
