"""Shared parts of the benchmark scripts: the real dataset, one JSON line per figure,
and the tests' own support (tests/support: a GCS-protocol server on 127.0.0.1 with an
optional latency proxy in front, the `genre-job train` command line)."""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path

os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
REAL_DATA = Path(
    os.environ.get("GENRE_JOB_REAL_DATA", ROOT.parent / "shared/data/imdb-posters-overviews")
)

from support import train_command  # noqa: E402, F401
from support.gcs_server import GcsServer, LatencyProxy, use_storage_endpoint  # noqa: E402, F401


def rounds(default: int) -> int:
    """Rounds a figure is the median of; $GENRE_JOB_BENCH_ROUNDS overrides (the tests run
    one round: they check the figures, not the speed)."""
    return int(os.environ.get("GENRE_JOB_BENCH_ROUNDS", default))


def emit(benchmark: str, figure: str, value: float, unit: str, **details) -> dict:
    """Prints one JSON line for a figure (and returns it)."""
    line = {
        "benchmark": benchmark,
        "figure": figure,
        "value": round(value, 4),
        "unit": unit,
        "cores": os.cpu_count(),
        "machine": platform.machine(),
        **details,
    }
    print(json.dumps(line), flush=True)
    return line


def data_root(argv: list[str]) -> Path:
    """The dataset a benchmark runs on: argv[1], or the real one (exit 0 saying why if absent)."""
    root = Path(argv[1]) if len(argv) > 1 else REAL_DATA
    if not (root / "IMDB_overview_genres.csv").exists():
        print(json.dumps({"skipped": f"no dataset at {root}"}))
        sys.exit(0)
    return root


def process_cpu_seconds(pid: int) -> float:
    """CPU time a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pin(pid: int, cores: set[int]) -> None:
    """Keeps every thread of process `pid` (and the threads they start) on `cores`."""
    for thread in os.listdir(f"/proc/{pid}/task"):
        try:
            os.sched_setaffinity(int(thread), cores)
        except ProcessLookupError:  # (a thread that ended meanwhile)
            pass


def upload_tree(source: Path, url: str, only: list[str] | None = None) -> None:
    """Copies the files under `source` (or just `only`, relative paths) to `url`, in parallel."""
    from job import storage

    fs, root = storage.filesystem(url)
    files = only or [p.relative_to(source).as_posix() for p in source.rglob("*") if p.is_file()]
    fs.put([str(source / f) for f in files], [f"{root}/{f}" for f in files])
