"""Benchmark 2: the poster pipeline reading from a GCS-protocol server on 127.0.0.1,
plain and behind a proxy adding 20 ms per request, against the local-folder rate; the
prepared TFRecord form behind the proxy; two ways to keep many requests in flight (the
job's chunks of gcsfs requests ahead of the decoder, job/storage/fetching.py, at several depths,
and a tf.data interleave of single gcsfs reads); and `genre-job train` end to end from
the bucket behind the proxy against the local folder.

The server and the proxy share the machine's cores with the job in the first figures, as
no real bucket does; the `isolated_` figures measure the pipeline again with the server
and the proxy on a core of their own and the job on the others, local folder included.

    python scripts/bench_storage.py [DATASET_ROOT] [FILMS]
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import benchlib
import tensorflow as tf

from job import storage
from job.data import poster_decoding, prepared
from job.data.catalogue import read_catalogue
from job.storage import fetching

CSV = "IMDB_overview_genres.csv"
# the local, bucket and bucket + 20 ms pipelines: each the median of 3 runs
ROUNDS = benchlib.rounds(3)
# The isolated figures: the median of 5 runs each (their ratios swing more than the others').
ISOLATED_ROUNDS = benchlib.rounds(5)
AHEADS = (1, 2, 4, 8, 16)  # fetching.FETCH_AHEAD values measured behind the 20 ms proxy
TRAIN_EPOCHS = "2"  # end to end: a first epoch that fetches, one from the decoded cache
TRAIN_ROUNDS = benchlib.rounds(2)  # local and bucket runs alternate; the median of each


def posters_per_s(data: str) -> tuple[float, int, float]:
    """(posters/s of the pipeline over `data`, posters, this process's CPU ms a poster)"""
    started, cpu = time.perf_counter(), time.process_time()
    films = read_catalogue(f"{data}/{CSV}")
    kept, _ = poster_decoding.read_posters(films, f"{data}/Images", 64)
    cpu_ms = (time.process_time() - cpu) * 1000 / len(kept)
    return len(kept) / (time.perf_counter() - started), len(kept), cpu_ms


def median_pipeline(data: str) -> tuple[float, int, float]:
    """posters_per_s over ROUNDS runs: the median rate, posters, the median CPU ms a poster
    (single runs of the bucket pipeline differed by up to 10%)."""
    runs = [posters_per_s(data) for _ in range(ROUNDS)]
    rate, cpu_ms = (statistics.median(run[i] for run in runs) for i in (0, 2))
    return rate, runs[0][1], cpu_ms


def poster_urls(data: str) -> list[str]:
    return [f"{data}/Images/{film_id}.jpg" for film_id in read_catalogue(f"{data}/{CSV}").ids]


def fetch_only_per_s(urls: list[str]) -> float:
    """Posters/s of the job's concurrent fetch alone (fetching.fetch_many), no decoding."""
    started = time.perf_counter()
    fetching.fetch_many(urls)
    return len(urls) / (time.perf_counter() - started)


def fetch_interleaved_per_s(urls: list[str], in_flight: int = 64) -> float:
    """Posters/s of the other way to fetch concurrently: tf.data interleave over one read
    a film (`in_flight` reads at once, each a gcsfs request), no decoding."""

    def read(url: tf.Tensor) -> tf.Tensor:
        return tf.numpy_function(lambda name: storage.read_bytes(name.decode()), [url], tf.string)

    # The read inside each interleaved dataset (not in the function that makes it, which
    # tf.data calls one element at a time), and a thread for each read in flight.
    options = tf.data.Options()
    options.threading.private_threadpool_size = in_flight
    reads = (
        tf.data.Dataset.from_tensor_slices(urls)
        .interleave(
            lambda url: tf.data.Dataset.from_tensors(url).map(read),
            cycle_length=in_flight,
            num_parallel_calls=in_flight,
        )
        .with_options(options)
    )
    started = time.perf_counter()
    fetched = sum(1 for _ in reads)
    return fetched / (time.perf_counter() - started)


def pipeline_by_ahead(data: str) -> dict[int, float]:
    """The pipeline's median rate over `data` with each of AHEADS chunks in flight."""
    chosen, rates = fetching.FETCH_AHEAD, {}
    try:
        for ahead in AHEADS:
            fetching.FETCH_AHEAD = ahead
            rates[ahead] = median_pipeline(data)[0]
    finally:
        fetching.FETCH_AHEAD = chosen
    return rates


def train_seconds(data: str, output: str, endpoint: str | None) -> float:
    """Wall seconds of `genre-job train --model cnn` over `data`, a subprocess (its storage
    behind `endpoint` when given)."""
    environment = dict(os.environ)
    if endpoint:
        environment["STORAGE_EMULATOR_HOST"] = endpoint
    command = benchlib.train_command("cnn", data, output, "--epochs", TRAIN_EPOCHS)
    started = time.perf_counter()
    subprocess.run(command, cwd=benchlib.ROOT, env=environment, check=True, capture_output=True)
    return time.perf_counter() - started


def end_to_end(root: str, bucket: str, endpoint: str, films: int) -> None:
    """`train` from the local folder and from the bucket behind `endpoint`, alternating."""
    runs: dict[str, list[float]] = {"local": [], "bucket": []}
    with tempfile.TemporaryDirectory() as folder:
        for round_ in range(TRAIN_ROUNDS):
            runs["local"].append(train_seconds(root, f"{folder}/run{round_}", None))
            output = f"{bucket}/runs/end-to-end-{round_}"
            runs["bucket"].append(train_seconds(f"{bucket}/imdb", output, endpoint))
    local, remote = (statistics.median(runs[name]) for name in ("local", "bucket"))
    details = {"films": films, "epochs": int(TRAIN_EPOCHS), "runs": runs}
    benchlib.emit("storage", "train_local_folder", local, "seconds", **details)
    benchlib.emit("storage", "train_gcs_server_20ms", remote, "seconds")
    benchlib.emit(
        "storage", "train_gcs_server_20ms_vs_local", local / remote, "ratio", goal=">= 0.8"
    )


def with_cpu_shares(measure, *pids: int) -> tuple[float, list[float]]:
    """`measure()`'s result, and the cores each of the processes `pids` (the server, the
    proxy) used meanwhile: their share of these 2 cores."""
    before, started = [benchlib.process_cpu_seconds(p) for p in pids], time.perf_counter()
    result = measure()
    seconds = time.perf_counter() - started
    after = [benchlib.process_cpu_seconds(p) for p in pids]
    return result, [(a - b) / seconds for a, b in zip(after, before, strict=True)]


def isolated_runs(local: str, bucket: str, endpoints: dict[str, str], pids: list[int]) -> dict:
    """In the process pinned to the job's cores: ISOLATED_ROUNDS runs of the pipeline over the
    local folder and over the bucket through each endpoint, in turn (a drift in the
    machine's speed hits all alike). Per source: the median rate, and the cores the
    storage processes (`pids`) used meanwhile."""
    sources = {"local": (local, None)} | {name: (bucket, url) for name, url in endpoints.items()}
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in sources}
    for round_ in range(ISOLATED_ROUNDS + 1):  # the first warms up: TF start, connections
        for name, (data, endpoint) in sources.items():
            if endpoint:
                benchlib.use_storage_endpoint(endpoint)
            (rate, _, _), shares = with_cpu_shares(lambda data=data: posters_per_s(data), *pids)
            if round_:
                runs[name].append((rate, sum(shares)))
    return {
        name: {
            "rate": statistics.median(r for r, _ in got),
            "storage_cores": max(c for _, c in got),
        }
        for name, got in runs.items()
    }


def isolated(root: str, bucket: str, server: benchlib.GcsServer, films: int) -> None:
    """The pipeline with storage off the job's cores: the server and a 20 ms proxy on the
    last core, the job on the others (a process started on them: every thread of it)."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        print("isolated figures skipped: one core", file=sys.stderr)
        return
    storage_core, job_cores = {cores[-1]}, set(cores[:-1])
    benchlib.pin(server.pid, storage_core)
    with benchlib.LatencyProxy(server.url, delay_s=0.020) as proxy:
        benchlib.pin(proxy.pid, storage_core)
        endpoints = {"plain": server.url, "20ms": proxy.url}
        arguments = [root, bucket, json.dumps(endpoints), json.dumps([server.pid, proxy.pid])]
        child = subprocess.run(
            [sys.executable, __file__, "--isolated", *arguments],
            preexec_fn=lambda: os.sched_setaffinity(0, job_cores),
            capture_output=True,
            text=True,
        )
    if child.returncode:
        raise RuntimeError(f"the isolated runs failed: {child.stderr[-2000:]}")
    got = json.loads(child.stdout.splitlines()[-1])
    local = got["local"]["rate"]
    details = {"films": films, "job_cores": len(job_cores)}
    benchlib.emit("storage", "isolated_local_folder", local, "posters/s", **details)
    for name, goal in (("plain", ">= 0.9"), ("20ms", ">= 0.8")):
        figure = "isolated_gcs_server" + ("" if name == "plain" else "_20ms")
        benchlib.emit("storage", figure, got[name]["rate"], "posters/s", **details)
        benchlib.emit(
            "storage", f"{figure}_vs_local", got[name]["rate"] / local, "ratio", goal=goal
        )
        # (the storage core's load: under 1, the server and proxy kept up)
        storage_cores = got[name]["storage_cores"]
        benchlib.emit("storage", f"{figure}_storage_cpu", storage_cores, "cores")


def prepared_per_s(data: str) -> float:
    started = time.perf_counter()
    films, _, _ = prepared.read_prepared(data, 64)
    return len(films) / (time.perf_counter() - started)


def main() -> None:
    if sys.argv[1:2] == ["--isolated"]:  # the job's side of isolated(), on its cores
        local, bucket, endpoints, pids = sys.argv[2:6]
        print(json.dumps(isolated_runs(local, bucket, json.loads(endpoints), json.loads(pids))))
        return
    root = benchlib.data_root(sys.argv)
    posters_per_s(str(root))  # warm-up: TF start, page cache
    local, films, local_cpu = median_pipeline(str(root))
    benchlib.emit("storage", "local_folder", local, "posters/s", films=films)
    benchlib.emit("storage", "local_folder_job_cpu_per_poster", local_cpu, "cpu ms")
    with benchlib.GcsServer(backend="filesystem") as server:
        bucket = server.create_bucket("bench")
        benchlib.use_storage_endpoint(server.url)
        benchlib.upload_tree(root, f"{bucket}/imdb")
        prepared.write_prepared(f"{bucket}/imdb", f"{bucket}/prepared", CSV, "Images")
        # Where the 2 cores go: the server's own share of the fetch, and fetching alone.
        urls = poster_urls(f"{bucket}/imdb")
        ours_before = time.process_time()  # this process: the job's side of the fetch
        fetch_only, (server_share,) = with_cpu_shares(lambda: fetch_only_per_s(urls), server.pid)
        benchlib.emit("storage", "gcs_server_fetch_only", fetch_only, "posters/s", films=films)
        benchlib.emit("storage", "gcs_server_cpu_during_fetch", server_share, "cores")
        # What fetching costs a node whose bucket is elsewhere: the client's CPU alone.
        client_s = (time.process_time() - ours_before) / len(urls) * 1000
        benchlib.emit("storage", "gcs_client_cpu_per_1000_fetched", client_s, "cpu seconds")
        interleaved = fetch_interleaved_per_s(urls)
        benchlib.emit("storage", "gcs_server_fetch_interleave", interleaved, "posters/s")
        (plain, _, plain_cpu), (server_share,) = with_cpu_shares(
            lambda: median_pipeline(f"{bucket}/imdb"), server.pid
        )
        benchlib.emit("storage", "gcs_server", plain, "posters/s", films=films)
        benchlib.emit("storage", "gcs_server_cpu_during_pipeline", server_share, "cores")
        benchlib.emit("storage", "gcs_server_vs_local", plain / local, "ratio", goal=">= 0.9")
        # The most it could be with the server on the job's cores, if a poster fetched cost
        # the job no more CPU than one read from a file: the share of the cores the server
        # left to it (less at a faster rate: the server's CPU grows with the requests).
        cores = len(os.sched_getaffinity(0))
        benchlib.emit("storage", "gcs_server_vs_local_cap", 1 - server_share / cores, "ratio")
        # The job's own CPU a poster, read from the bucket against the local folder: the
        # rate it reaches, as a share of local, when the server is not on its cores.
        benchlib.emit("storage", "gcs_server_job_cpu_per_poster", plain_cpu, "cpu ms")
        benchlib.emit("storage", "gcs_server_job_cpu_vs_local", local_cpu / plain_cpu, "ratio")
        with benchlib.LatencyProxy(server.url, delay_s=0.020) as proxy:
            benchlib.use_storage_endpoint(proxy.url)
            (slow, _, _), (server_share, proxy_share) = with_cpu_shares(
                lambda: median_pipeline(f"{bucket}/imdb"), server.pid, proxy.pid
            )
            benchlib.emit("storage", "gcs_server_20ms", slow, "posters/s", films=films)
            benchlib.emit("storage", "gcs_server_20ms_cpu_server", server_share, "cores")
            benchlib.emit("storage", "gcs_server_20ms_cpu_proxy", proxy_share, "cores")
            benchlib.emit(
                "storage", "gcs_server_20ms_vs_local", slow / local, "ratio", goal=">= 0.8"
            )
            cap = 1 - (server_share + proxy_share) / cores  # (as gcs_server_vs_local_cap)
            benchlib.emit("storage", "gcs_server_20ms_vs_local_cap", cap, "ratio")
            # The two ways to have many requests in flight, against a distant bucket.
            fetch_slow = fetch_only_per_s(urls)
            benchlib.emit("storage", "gcs_server_20ms_fetch_only", fetch_slow, "posters/s")
            interleaved = fetch_interleaved_per_s(urls)
            benchlib.emit("storage", "gcs_server_20ms_fetch_interleave", interleaved, "posters/s")
            # What the 20 ms cost on its own: latency hidden by requests in flight.
            benchlib.emit("storage", "gcs_server_20ms_vs_plain", slow / plain, "ratio")
            for ahead, rate in pipeline_by_ahead(f"{bucket}/imdb").items():
                figure = f"gcs_server_20ms_ahead_{ahead}"
                benchlib.emit("storage", figure, rate, "posters/s", chunk=fetching.FETCH_CHUNK)
            shards = prepared_per_s(f"{bucket}/prepared")
            benchlib.emit("storage", "prepared_20ms", shards, "films/s", films=films)
            benchlib.emit(
                "storage", "prepared_20ms_vs_local", shards / local, "ratio", goal=">= 0.9"
            )
            end_to_end(str(root), bucket, proxy.url, films)
        isolated(str(root), f"{bucket}/imdb", server, films)


if __name__ == "__main__":
    main()
