"""Benchmark 4: films/s of `genre-job predict` over the real dataset read from a
GCS-protocol server on 127.0.0.1 (a model trained one epoch on a sample first).

    python scripts/bench_predict.py [DATASET_ROOT]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import benchlib
import pandas as pd

from job.config import TrainConfig
from job.predict import predict
from job.train.run import train


def main() -> None:
    root = benchlib.data_root(sys.argv)
    server = benchlib.GcsServer(backend="filesystem")
    with tempfile.TemporaryDirectory() as folder, server:
        sample = Path(folder) / "sample"
        sample.mkdir()
        frame = pd.read_csv(root / "IMDB_overview_genres.csv", dtype=str, keep_default_na=False)
        frame.sample(min(512, len(frame)), random_state=0).to_csv(
            sample / "IMDB_overview_genres.csv", index=False
        )
        (sample / "Images").symlink_to(root / "Images")
        bucket = server.create_bucket("bench")
        benchlib.use_storage_endpoint(server.url)
        benchlib.upload_tree(root, f"{bucket}/imdb")
        for model in ("cnn", "lstm"):
            run = f"{bucket}/runs/{model}"
            train(TrainConfig(model=model, data=str(sample), output=run, epochs=1))
            started = time.perf_counter()
            _, counts = predict(
                run,
                f"{bucket}/imdb",
                f"{bucket}/{model}-predictions.csv",
                "IMDB_overview_genres.csv",
                "Images",
            )
            films = sum(counts.values())  # one row a film, scored or not
            benchlib.emit(
                "predict",
                f"{model}_from_bucket",
                films / (time.perf_counter() - started),
                "films/s",
                films=films,
            )


if __name__ == "__main__":
    main()
