"""Benchmark 3: CNN and LSTM training samples/s per epoch on this machine's CPU, with the
share of step time spent waiting for input (the pipeline's next batch).

    python scripts/bench_training.py [DATASET_ROOT] [FILMS]
"""

from __future__ import annotations

import sys
import time

import benchlib
import keras
import numpy as np

from job import features, models
from job.catalogue import read_catalogue, split_of


def timed_epoch(model: keras.Model, dataset) -> tuple[float, float, int]:
    """(seconds in total, seconds waiting for input, samples) of one epoch."""
    waiting, samples, started = 0.0, 0, time.perf_counter()
    iterator = iter(dataset)
    while True:
        asked = time.perf_counter()
        try:
            inputs, labels = next(iterator)
        except StopIteration:
            break
        waiting += time.perf_counter() - asked
        model.train_on_batch(inputs, labels)
        samples += int(labels.shape[0])
    return time.perf_counter() - started, waiting, samples


def main() -> None:
    root = benchlib.data_root(sys.argv)
    limit = int(sys.argv[2]) if len(sys.argv) > 2 else 1024
    films = read_catalogue(str(root / "IMDB_overview_genres.csv"))
    films = films.subset(np.arange(len(films)) < limit)
    train = split_of(films.ids, 42, 0.1, 0.1) == "train"
    kept, posters = features.read_posters(films, str(root / "Images"), 64)
    vectorizer = features.make_vectorizer(
        [o for o, t in zip(films.overviews, train, strict=True) if t], 10_000, 100
    )
    runs = {
        "cnn": (models.build_cnn(len(films.genres)), posters, kept.labels),
        "lstm": (
            models.build_lstm(len(films.genres), vectorizer.vocabulary_size()),
            features.vectorize(vectorizer, films.overviews),
            films.labels,
        ),
    }
    for name, (model, inputs, labels) in runs.items():
        models.compile_model(model, 1e-4)
        dataset = features.make_dataset(inputs, labels, 64, True, seed=0, augment=True)
        model.train_on_batch(*next(iter(dataset)))  # warm-up: tracing
        seconds, waiting, samples = timed_epoch(model, dataset)
        benchlib.emit(
            "training",
            f"{name}_epoch",
            samples / seconds,
            "samples/s",
            films=samples,
            batch=64,
            device="cpu",
        )
        benchlib.emit(
            "training", f"{name}_input_wait", waiting / seconds, "fraction", goal="< 0.05"
        )


if __name__ == "__main__":
    main()
