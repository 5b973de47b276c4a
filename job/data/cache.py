"""Where decoded posters live between epochs (`train --cache auto|memory|disk|none`).

auto:   memory when the decoded posters take at most half the memory available (the
        host's, or less under a container's memory limit), else disk (the default);
memory: one uint8 tensor (films, 64, 64, 3) in host RAM, 12 KB a film; the splits select
        rows of it, never copies (TensorPosters);
disk:   the same array in a local .npy file, written chunk by chunk as posters decode and
        read back a batch at a time, so RAM holds a chunk, never the dataset;
none:   the JPEG bytes stay in RAM and every epoch decodes them again (the pipeline a
        cache saves; kept for measuring and for tiny hosts with a big GPU).
Every kind is indexed like an array (`posters[mask]`), so splits work the same on all.
"""

from __future__ import annotations

import logging
import mmap
import os
import tempfile
import threading
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import tensorflow as tf

log = logging.getLogger(__name__)

TF_ALIGNMENT = 64  # bytes: where TensorFlow's CPU tensors start (Eigen's maximum alignment)
# --cache auto keeps decoded posters in RAM while they take at most this share of the
# memory available: the rest is for TensorFlow, the model and the batches in flight.
MEMORY_SHARE = 0.5
CGROUP_MEMORY = (  # (limit, usage) files of a container's memory cgroup: v2, then v1
    ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
    ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
)


def choose_cache(cache: str, films: int, image_size: int, available: int | None = None) -> str:
    """The cache kind to use: `auto` becomes memory when `films` decoded posters fit in
    MEMORY_SHARE of the `available` bytes (default: measured now), else disk."""
    if cache != "auto":
        return cache
    needed = films * image_size * image_size * 3
    available = available_memory() if available is None else available
    chosen = "memory" if needed <= MEMORY_SHARE * available else "disk"
    log.info(
        "--cache auto: %s (decoded posters %.1f MB, memory available %.1f MB)",
        chosen,
        needed / 1e6,
        available / 1e6,
    )
    return chosen


def available_memory() -> int:
    """Bytes this process can still take: the host's MemAvailable, or what is left under
    the container's memory limit when that is less (a Kubernetes pod's limit is a cgroup's)."""
    left = [host_memory_available()]
    for limit_file, usage_file in CGROUP_MEMORY:
        try:
            limit = Path(limit_file).read_text().strip()
            usage = int(Path(usage_file).read_text())
        except (OSError, ValueError):
            continue
        if limit.isdigit():  # "max" (v2) means no limit; v1 writes a huge number instead
            left.append(int(limit) - usage)
    return max(0, min(left))


def host_memory_available() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


class HeldRows:
    """Films held as rows of one uint8 (films, size, size, 3) array or tensor: selecting
    films (the splits, the films with an overview) selects rows, never copies posters."""

    rows: np.ndarray  # int64 indexes into what holds the posters
    dtype = np.dtype(np.uint8)

    def __getitem__(self, selection: np.ndarray):
        return replace(self, rows=self.rows[selection])

    def __len__(self) -> int:
        return len(self.rows)


@dataclass(frozen=True)
class DiskPosters(HeldRows):
    """Rows `rows` of a uint8 (films, size, size, 3) array memory-mapped from a .npy file."""

    array: np.ndarray  # np.memmap
    rows: np.ndarray

    def read(self, rows: np.ndarray) -> np.ndarray:
        """A batch of posters from the file: (len(rows), size, size, 3) uint8."""
        return np.asarray(self.array[np.asarray(rows)])


@dataclass(frozen=True)
class TensorPosters(HeldRows):
    """Rows `rows` of a uint8 (films, size, size, 3) tensor in host memory (--cache memory).

    A run holds its decoded posters once, and every epoch gathers from the one tensor.
    Held as a numpy array, each split's copy and each dataset's tensor of it would
    multiply the cache's memory at the peak.
    """

    tensor: tf.Tensor
    rows: np.ndarray


@dataclass(frozen=True)
class JpegPosters:
    """The films' JPEG bytes (already checked to decode); decoded again every epoch."""

    blobs: np.ndarray  # object array of bytes, one a film
    image_size: int
    decoding: str  # poster_decoding.POSTER_DECODINGS

    dtype = np.dtype(np.uint8)  # what decoding gives

    def __getitem__(self, selection: np.ndarray) -> JpegPosters:
        return replace(self, blobs=self.blobs[selection])

    def __len__(self) -> int:
        return len(self.blobs)


Posters = np.ndarray | TensorPosters | DiskPosters | JpegPosters


class PosterSink:
    """Collects decoded chunks of posters (and their JPEG bytes) into the chosen cache."""

    def __init__(
        self,
        cache: str,
        films: int,
        image_size: int,
        cache_dir: str | None,
        decoding: str = "",  # --cache none: how its JPEGs decode every epoch
    ) -> None:
        self.cache, self.image_size, self.decoding = cache, image_size, decoding
        self.blobs: list[bytes] = []
        self.count = 0
        shape = (films, image_size, image_size, 3)
        # memory: filled in place as chunks decode (no copy at the end). Its pages are
        # touched on a thread now, while the decoding pipeline is being built (a core is
        # idle then), so that faulting them in does not slow the decoding.
        self.array = aligned_empty(shape if cache == "memory" else (0, *shape[1:]))
        self.touching = threading.Thread(target=touch_pages, args=(self.array,), daemon=True)
        if self.array.size:  # (disk and none hold no array; nothing to touch)
            self.touching.start()
        self.file: np.ndarray | None = None
        if cache == "disk":
            folder = Path(cache_dir or tempfile.mkdtemp(prefix="genre-job-cache-"))
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"posters-{image_size}.npy"
            self.file = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=shape)
            log.info("caching decoded posters in %s (%.1f MB)", path, np.prod(shape) / 1e6)
            if not cache_dir:  # ours alone: unlinked now, its space freed when the job ends
                path.unlink()
                folder.rmdir()

    def add(self, posters: np.ndarray, blobs: list[bytes]) -> None:
        """`posters`: the decoded good posters of a chunk; `blobs`: their JPEG bytes."""
        if self.touching.is_alive():  # (done long before the first chunk decodes, usually)
            self.touching.join()
        if self.cache == "disk":
            self.file[self.count : self.count + len(posters)] = posters
        elif self.cache == "none":
            self.blobs += blobs
        else:
            self.array[self.count : self.count + len(posters)] = posters
        self.count += len(posters)

    def posters(self) -> Posters:
        if self.cache == "disk":
            self.file.flush()
            return DiskPosters(self.file, np.arange(self.count))
        if self.cache == "none":
            blobs = np.empty(len(self.blobs), dtype=object)
            blobs[:] = self.blobs
            return JpegPosters(blobs, self.image_size, self.decoding)
        return self.array[: self.count]


def cache_posters(posters: Posters, cache: str, cache_dir: str | None) -> Posters:
    """A training run's decoded posters into the chosen cache. In memory they become one
    tensor over the array's memory (host_tensor). A prepared dataset has no JPEG bytes to
    keep, so `none` keeps them in memory too. Posters already held elsewhere stay there."""
    if not isinstance(posters, np.ndarray):  # already held (disk file, JPEG bytes)
        return posters
    if cache == "disk":
        sink = PosterSink("disk", len(posters), posters.shape[1], cache_dir)
        sink.add(posters, [])
        return sink.posters()
    return TensorPosters(host_tensor(posters), np.arange(len(posters)))


def touch_pages(array: np.ndarray) -> None:
    """Write a byte in every page of `array` so that the OS maps its memory now (numpy
    lets other threads run meanwhile)."""
    array.reshape(-1)[:: mmap.PAGESIZE] = 0


def aligned_empty(shape: tuple[int, ...]) -> np.ndarray:
    """An uninitialised uint8 array on fresh pages (so 64-byte aligned, as TensorFlow needs
    to use it in place: host_tensor), asked for as huge pages where the kernel offers them
    (transparent huge pages, "madvise" mode): fresh 2 MB pages cost the kernel a fraction
    of the CPU that as many 4 KB pages do to map."""
    size = int(np.prod(shape))
    if size == 0:
        return np.empty(shape, np.uint8)
    memory = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if hasattr(mmap, "MADV_HUGEPAGE"):  # Linux
        memory.madvise(mmap.MADV_HUGEPAGE)
    return np.frombuffer(memory, np.uint8).reshape(shape)  # holds `memory` while it lives


def host_tensor(array: np.ndarray) -> tf.Tensor:
    """A uint8 tensor in host memory over `array`'s memory when TensorFlow can use it in
    place (DLPack; 64-byte aligned, contiguous), else a copy. tf.constant would hold two
    copies at once."""
    if array.flags.c_contiguous and array.ctypes.data % TF_ALIGNMENT == 0:
        return tf.experimental.dlpack.from_dlpack(array.__dlpack__())  # keeps `array` alive
    with tf.device("/cpu:0"):
        return tf.constant(array)


def no_rewrites() -> tf.data.Options:
    """tf.data options for a pipeline over a large tensor it captures (the cache).

    With tf.data's default graph rewrites, starting an iterator serializes the pipeline's
    graph, captured tensors included: every epoch would copy the whole cache. The
    pipelines here are written as they should run: nothing for the rewrites to do.
    """
    options = tf.data.Options()
    options.experimental_optimization.apply_default_optimizations = False
    return options
