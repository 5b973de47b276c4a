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

from job import features, jpegs, models
from job.cache import cache_posters
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
    kept, posters = jpegs.read_posters(films, str(root / "Images"), 64)
    posters = cache_posters(posters, "memory", None)  # as a run holds them
    texts = [o for o, t in zip(films.overviews, train, strict=True) if t]
    # (name, model kind, settings): the notebook's and the tuned recipe's overview model, and
    # the GPU-side options measured on this CPU (bfloat16 compute, XLA).
    variants = [
        ("cnn", "cnn", {}),
        ("cnn_mixed_precision", "cnn", {"mixed": True}),
        ("cnn_jit_compile", "cnn", {"jit": True}),
        ("lstm_notebook", "lstm", {"sequence_length": 100, "recurrent_dropout": 0.2}),
        ("lstm_tuned", "lstm", {"sequence_length": 64, "recurrent_dropout": 0.0}),
    ]
    for name, kind, settings in variants:
        keras.mixed_precision.set_global_policy(
            "mixed_bfloat16" if settings.get("mixed") else "float32"
        )
        if kind == "cnn":
            model, inputs, labels = models.build_cnn(len(films.genres)), posters, kept.labels
        else:
            length = settings["sequence_length"]
            vectorizer = features.make_vectorizer(texts, 10_000, length)
            model = models.build_lstm(
                len(films.genres),
                vectorizer.vocabulary_size(),
                length,
                settings["recurrent_dropout"],
            )
            inputs, labels = features.vectorize(vectorizer, films.overviews), films.labels
        # As a run trains: uint8 posters in, converted and flipped in the model's step.
        model = models.poster_input(model, flip=True, seed=0)
        models.compile_model(model, 1e-4, jit_compile=settings.get("jit", False))
        dataset = features.make_dataset(inputs, labels, 64, True, seed=0, uint8_posters=True)
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
    keras.mixed_precision.set_global_policy("float32")


if __name__ == "__main__":
    main()
