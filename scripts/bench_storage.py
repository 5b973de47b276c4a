"""Benchmark 2: the poster pipeline reading from a GCS-protocol server on 127.0.0.1,
plain and behind a proxy adding 20 ms per request, against the local-folder rate; and the
prepared TFRecord form behind the proxy.

    python scripts/bench_storage.py [DATASET_ROOT] [FILMS]
"""

from __future__ import annotations

import sys
import time

import benchlib

from job import features, prepared, storage
from job.catalogue import read_catalogue

CSV = "IMDB_overview_genres.csv"


def posters_per_s(data: str) -> tuple[float, int]:
    started = time.perf_counter()
    films = read_catalogue(f"{data}/{CSV}")
    kept, _ = features.read_posters(films, f"{data}/Images", 64)
    return len(kept) / (time.perf_counter() - started), len(kept)


def fetch_only_per_s(data: str) -> float:
    """Posters/s of the concurrent fetch alone, no decoding."""
    films = read_catalogue(f"{data}/{CSV}")
    started = time.perf_counter()
    storage.fetch_many([f"{data}/Images/{film_id}.jpg" for film_id in films.ids])
    return len(films) / (time.perf_counter() - started)


def prepared_per_s(data: str) -> float:
    started = time.perf_counter()
    films, _ = prepared.read_prepared(data, 64)
    return len(films) / (time.perf_counter() - started)


def main() -> None:
    root = benchlib.data_root(sys.argv)
    posters_per_s(str(root))  # warm-up: TF start, page cache
    local, films = posters_per_s(str(root))
    benchlib.emit("storage", "local_folder", local, "posters/s", films=films)
    with benchlib.GcsServer() as server:
        bucket = server.create_bucket("bench")
        benchlib.use_storage_endpoint(server.url)
        benchlib.upload_tree(root, f"{bucket}/imdb")
        prepared.write_prepared(f"{bucket}/imdb", f"{bucket}/prepared", CSV, "Images")
        # Where the 2 cores go: the server's own share of the fetch, and fetching alone.
        cpu_before, started = server.cpu_seconds(), time.perf_counter()
        fetch_only = fetch_only_per_s(f"{bucket}/imdb")
        server_share = (server.cpu_seconds() - cpu_before) / (time.perf_counter() - started)
        benchlib.emit("storage", "gcs_server_fetch_only", fetch_only, "posters/s", films=films)
        benchlib.emit("storage", "gcs_server_cpu_during_fetch", server_share, "cores")
        plain, _ = posters_per_s(f"{bucket}/imdb")
        benchlib.emit("storage", "gcs_server", plain, "posters/s", films=films)
        benchlib.emit("storage", "gcs_server_vs_local", plain / local, "ratio", goal=">= 0.9")
        with benchlib.LatencyProxy(server.url, delay_s=0.020) as proxy:
            benchlib.use_storage_endpoint(proxy.url)
            slow, _ = posters_per_s(f"{bucket}/imdb")
            benchlib.emit("storage", "gcs_server_20ms", slow, "posters/s", films=films)
            benchlib.emit(
                "storage", "gcs_server_20ms_vs_local", slow / local, "ratio", goal=">= 0.8"
            )
            # What the 20 ms cost on its own: latency hidden by requests in flight.
            benchlib.emit("storage", "gcs_server_20ms_vs_plain", slow / plain, "ratio")
            shards = prepared_per_s(f"{bucket}/prepared")
            benchlib.emit("storage", "prepared_20ms", shards, "films/s", films=films)
            benchlib.emit(
                "storage", "prepared_20ms_vs_local", shards / local, "ratio", goal=">= 0.9"
            )


if __name__ == "__main__":
    main()
