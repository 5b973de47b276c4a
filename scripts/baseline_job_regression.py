"""The job's own logistic regressions alone, no network (job/model/logistic.py: the
"Prior" of --tfidf-logistic / --colour-logistic), on the job's split: C chosen on
validation mAP, per-genre thresholds tuned on validation. One JSON line a regression.

    python scripts/baseline_job_regression.py [DATASET_ROOT [RUNS_FOLDER]]

With RUNS_FOLDER, writes run folders regression-tfidf, regression-colour and
regression-joint there for `genre-job compare`. SPLIT_SEED as the other baselines.
"""

from __future__ import annotations

import sys
from pathlib import Path

import baselinelib
import numpy as np
import tensorflow as tf

from job.config import TrainConfig
from job.model import logistic
from job.train.run import load_films


def main() -> None:
    root = baselinelib.data_root(sys.argv)
    runs = Path(sys.argv[2]) if len(sys.argv) > 2 else None
    # The fusion's films and inputs: those with an overview and a poster, both read.
    config = TrainConfig(
        model="fusion", data=str(root), output="unused", split_seed=baselinelib.SEED
    )
    films, inputs, _, _ = load_films(config)
    everything = logistic.Features(inputs["Ngrams"], logistic.colour_histograms(inputs["Poster"]))
    regressions = {
        "tfidf": logistic.Features(ngrams=everything.ngrams),
        "colour": logistic.Features(colours=everything.colours),
        "joint": everything,
    }
    for name, features in regressions.items():

        def fit_predict(c, train, y, others, features=features):
            # `train` and `others` are row numbers: baselinelib splits them as the job does.
            standard = None
            if features.colours is not None:
                colours = features.colours[train]
                standard = (colours.mean(0), logistic.COLOUR_SCALE / (colours.std(0) + 1e-3))
            y = tf.constant(y, tf.float32)
            kernels, bias = logistic.fit_one(features.take(train).parts(standard), y, c)
            return [
                tf.sigmoid(
                    logistic.predict(features.take(rows).parts(standard), kernels, bias)
                ).numpy()
                for rows in others
            ]

        output = str(runs / f"regression-{name}") if runs else None
        rows = np.arange(len(films.ids))
        baselinelib.run(f"job_regression_{name}", films, rows, fit_predict, logistic.C_GRID, output)


if __name__ == "__main__":
    main()
