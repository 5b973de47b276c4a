"""The benchmark scripts run and print their JSON figures (on the tiny demo set; their
speed is measured by scripts/bench, never asserted here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT, scaled

pytestmark = pytest.mark.slow  # runs every benchmark script

TRAINING_RUNS = ("cnn", "cnn_mixed_precision", "cnn_jit_compile", "lstm_notebook", "lstm_tuned")
# The scripts' own sample sizes, smaller: one batch an epoch shows every figure.
FILMS = {"bench_training.py": ["64"]}


@pytest.mark.parametrize(
    "script, figures",
    [
        (
            "bench_pipeline.py",
            {
                "raw_decode_resize",
                "raw_decode_resize_tf_defaults",
                "raw_full_size_decode_resize",
                "raw_decode_resize_per_poster",
                "raw_decode_resize_batched",
                "first_epoch",
                "first_epoch_vs_raw",
                "first_epoch_read_decode",
                "first_epoch_read_decode_vs_raw",
                "raw_decode_resize_batched_cpu",
                "first_epoch_cpu",
                "first_epoch_cache_touch_cpu",
                "cached_epoch",
                "cached_vs_first",
                "disk_cached_epoch",
                "uncached_epoch",
            },
        ),
        (
            "bench_storage.py",
            {
                "local_folder",
                "local_folder_job_cpu_per_poster",
                "gcs_server_job_cpu_per_poster",
                "gcs_server_job_cpu_vs_local",
                "gcs_server_fetch_only",
                "gcs_server_fetch_interleave",
                "gcs_server_20ms_fetch_only",
                "gcs_server_20ms_fetch_interleave",
                "gcs_server_cpu_during_fetch",
                "gcs_client_cpu_per_1000_fetched",
                "gcs_server",
                "gcs_server_cpu_during_pipeline",
                "gcs_server_vs_local",
                "gcs_server_vs_local_cap",
                "gcs_server_20ms",
                "gcs_server_20ms_cpu_server",
                "gcs_server_20ms_cpu_proxy",
                "gcs_server_20ms_vs_local",
                "gcs_server_20ms_vs_local_cap",
                "gcs_server_20ms_vs_plain",
                *(f"gcs_server_20ms_ahead_{ahead}" for ahead in (1, 2, 4, 8, 16)),
                "train_local_folder",
                "train_gcs_server_20ms",
                "train_gcs_server_20ms_vs_local",
                "prepared_20ms",
                "prepared_20ms_vs_local",
                "isolated_local_folder",
                *(
                    f"isolated_gcs_server{delay}{figure}"
                    for delay in ("", "_20ms")
                    for figure in ("", "_vs_local", "_storage_cpu")
                ),
            },
        ),
        (
            "bench_training.py",
            {f"{run}_{figure}" for run in TRAINING_RUNS for figure in ("epoch", "input_wait")},
        ),
        ("bench_predict.py", {"cnn_from_bucket", "lstm_from_bucket"}),
        ("bench_memory.py", {"train_cnn_peak_rss"}),
    ],
)
def test_benchmark_prints_its_figures(script, figures, demo_dir, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "scripts"), "TMPDIR": str(tmp_path)}
    env["GENRE_JOB_BENCH_ROUNDS"] = "1"  # the figures' names and signs, not their spread
    env.pop("STORAGE_EMULATOR_HOST", None)
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / script), str(demo_dir), *FILMS.get(script, [])],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=scaled(600),
    )

    assert result.returncode == 0, result.stderr[-2000:]
    # No server's objects or job's staging left behind (they had filled a disk, run after run).
    assert not [*tmp_path.glob("fake-gcs-*"), *tmp_path.glob("genre-job-*")]
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert {line["figure"] for line in lines} == figures
    # Rates, ratios and memory are positive; a CPU share or the fraction of time waiting
    # for input may round to 0 on the tiny demo set.
    shares = ("cores", "cpu seconds", "cpu ms", "fraction")
    rates = [line for line in lines if line["unit"] not in shares]
    assert [line for line in rates if line["value"] <= 0] == []
    assert [line for line in lines if line["value"] < 0] == []


def test_latency_proxy_delays_each_request_and_passes_bytes_intact(gcs_server, bucket):
    """The benchmark's latency proxy: each request reaches the server `delay_s` later; a
    large answer (past the transports' write buffers: flow control) arrives whole; a
    client that leaves mid-answer does not stop the proxy serving the next one."""
    import http.client
    import time

    from support.gcs_server import LatencyProxy

    from job import storage

    body = os.urandom(8 * 2**20)
    storage.write_bytes(f"{bucket}/big.bin", body)
    path = f"/storage/v1/b/{bucket[5:]}/o/big.bin?alt=media"
    with LatencyProxy(gcs_server, delay_s=0.25) as proxy:

        def connect() -> http.client.HTTPConnection:
            return http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=30)

        def get(connection: http.client.HTTPConnection, whole: bool = True):
            started = time.perf_counter()
            connection.request("GET", path)
            answer = connection.getresponse()
            waited = time.perf_counter() - started
            return waited, answer.read() if whole else answer.read(1000)

        kept_alive = connect()
        for _ in range(2):  # the first while the proxy connects upstream, then on the way
            waited, data = get(kept_alive)
            assert 0.25 <= waited < 5
            assert data == body
        leaving = connect()
        assert get(leaving, whole=False)[1] == body[:1000]
        leaving.close()  # mid-answer
        waited, data = get(kept_alive)
        assert 0.25 <= waited < 5
        assert data == body
