"""What the tests (and the benchmark scripts) run the job with: a bucket on 127.0.0.1
(gcs_server), a fault-injecting proxy (faultproxy), the `genre-job train` command line."""

from __future__ import annotations

import sys


def train_command(model: str, data: str, output: str, *extra: str) -> list[str]:
    """`genre-job train` as a subprocess runs it, with this interpreter."""
    return [
        sys.executable,
        "-m",
        "job",
        "train",
        "--model",
        model,
        "--data",
        data,
        "--output",
        output,
        *extra,
    ]
