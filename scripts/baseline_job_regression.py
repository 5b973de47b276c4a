"""The job's own logistic regressions alone, no network (job/model/logistic.py: the
"Prior" of --tfidf-logistic / --colour-logistic), on the job's split: C chosen on
validation mAP, per-genre thresholds tuned on validation. One JSON line a regression.

    python scripts/baseline_job_regression.py [DATASET_ROOT [RUNS_FOLDER]]

With RUNS_FOLDER, writes run folders regression-tfidf, regression-colour and
regression-joint there for `genre-job compare`. SPLIT_SEED as the other baselines;
COLOUR_FEATURES=statistics: the posters' features of `--colour-features statistics`, the
two regressions that read posters only (regression-colour-statistics, -joint-statistics).
"""

from __future__ import annotations

import os
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
    kind = os.environ.get("COLOUR_FEATURES", "histogram")
    colours = logistic.features_of_posters(inputs["Poster"], kind)
    suffix = "" if kind == "histogram" else f"-{kind}"
    regressions = {
        "tfidf": logistic.Features(ngrams=inputs["Ngrams"]),
        f"colour{suffix}": logistic.Features(colours=colours, kind=kind),
        f"joint{suffix}": logistic.Features(inputs["Ngrams"], colours, kind),
    }
    if suffix:  # (the TF-IDF one is the same whatever the posters' features)
        del regressions["tfidf"]
    for name, features in regressions.items():

        def fit_predict(c, train, y, others, features=features):
            # `train` and `others` are row numbers: baselinelib splits them as the job does.
            standard = features.colour_standard(train)
            y = tf.constant(y, tf.float32)
            kernels, bias = logistic.fit_one(features.take(train).parts(standard), y, c)
            return [
                tf.sigmoid(
                    logistic.predict(features.take(rows).parts(standard), kernels, bias)
                ).numpy()
                for rows in others
            ]

        output = str(runs / f"regression-{name}") if runs else None
        name = name.replace("-", "_")
        rows = np.arange(len(films.ids))
        baselinelib.run(f"job_regression_{name}", films, rows, fit_predict, logistic.C_GRID, output)


if __name__ == "__main__":
    main()
