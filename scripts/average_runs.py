"""Averaged probabilities of finished runs on their shared evaluation films: the mAP of a
seed ensemble, or of a late fusion of models (a baseline's run folder included), from
the runs' predictions.csv alone.

    python scripts/average_runs.py GROUP [GROUP ...]

A GROUP is one run folder or several joined by commas: each group's runs are averaged
first, then the groups, equally (so `a,b,c d` weighs d as much as a, b and c together).
Prints one JSON line: the mAP of the average and of each run alone.
"""

from __future__ import annotations

import io
import json
import sys

import numpy as np
import pandas as pd

from job import storage
from job.model import metrics


def evaluation_probabilities(run: str) -> pd.DataFrame:
    """A run's evaluation probabilities, one row an Id, one column a genre; `truth`, the
    true genres joined by |, last."""
    frame = pd.read_csv(
        io.BytesIO(storage.read_bytes(storage.join(run, "predictions.csv"))),
        dtype={"Id": str},
        keep_default_na=False,
    ).set_index("Id")
    probabilities = frame[[c for c in frame.columns if c.startswith("prob_")]]
    probabilities.columns = [c.removeprefix("prob_") for c in probabilities.columns]
    return probabilities.assign(truth=frame["true_genres"])


def main() -> None:
    groups = [argument.split(",") for argument in sys.argv[1:]]
    if not groups:
        sys.exit(__doc__)
    runs = {run: evaluation_probabilities(run) for group in groups for run in group}
    first = next(iter(runs.values()))
    genres = [c for c in first.columns if c != "truth"]
    ids = sorted(set.intersection(*(set(frame.index) for frame in runs.values())))
    if any(len(frame) != len(ids) for frame in runs.values()):
        sys.exit("the runs were scored on different evaluation films (another --split-seed?)")
    labels = np.array([[g in t.split("|") for g in genres] for t in first.loc[ids, "truth"]])

    def probabilities(run: str) -> np.ndarray:
        return runs[run].loc[ids, genres].to_numpy(dtype=float)

    average = np.mean([np.mean([probabilities(r) for r in group], axis=0) for group in groups], 0)
    line = {
        "films": len(ids),
        "groups": groups,
        "mAP": round(metrics.score(labels, average, 0.5, genres)["mAP"], 4),
        "mAP_each": {
            r: round(metrics.score(labels, probabilities(r), 0.5, genres)["mAP"], 4) for r in runs
        },
    }
    print(json.dumps(line))


if __name__ == "__main__":
    main()
