"""Shared parts of the baseline scripts: the job's own split of a dataset, and one JSON
line of scores at thresholds tuned on validation and at 0.5 (job.model.metrics, as the job).

SPLIT_SEED (default 42, the job's) picks the films as `genre-job train --split-seed` does.
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from job.data.catalogue import Catalogue, read_catalogue, split_of
from job.model import metrics
from job.predict import predictions_frame

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared/data/imdb-posters-overviews"
# The job's defaults (job/config.py): the same evaluation films as `genre-job train`.
SEED, VALIDATION, EVALUATION = int(os.environ.get("SPLIT_SEED", "42")), 0.1, 0.1


def data_root(argv: list[str]) -> Path:
    root = Path(argv[1]) if len(argv) > 1 else DEFAULT_DATA
    if not (root / "IMDB_overview_genres.csv").exists():
        sys.exit(f"no dataset at {root} (IMDB_overview_genres.csv missing)")
    return root


def films(root: Path) -> Catalogue:
    return read_catalogue(str(root / "IMDB_overview_genres.csv"))


def run(
    name: str,
    films: Catalogue,
    features: np.ndarray,
    fit_predict: Callable[[float, np.ndarray, np.ndarray, list[np.ndarray]], list[np.ndarray]],
    grid: tuple[float, ...],
    output: str | None = None,
) -> dict:
    """Split as the job does, fit on train for each regularisation strength C of `grid`,
    keep the C with the best validation mAP, tune thresholds on validation, score evaluation.

    `fit_predict(c, train_x, train_y, [x, ...])` returns probabilities (films, genres) for
    each x. Prints and returns one JSON line; with `output`, also writes config.json,
    metrics.json and predictions.csv there as a run does, for `genre-job compare` and
    scripts/average_runs.py.
    """
    started = time.perf_counter()
    split = split_of(films.ids, SEED, VALIDATION, EVALUATION)
    labels = films.labels
    part = {s: split == s for s in ("train", "validation", "evaluation")}
    tried = {}
    for c in grid:
        tried[c] = fit_predict(
            c,
            features[part["train"]],
            labels[part["train"]],
            [features[part["validation"]], features[part["evaluation"]]],
        )
    validation_map = {
        c: metrics.score(labels[part["validation"]], probs[0], 0.5, films.genres)["mAP"]
        for c, probs in tried.items()
    }
    best_c = max(grid, key=lambda c: validation_map[c])
    validation_probs, evaluation_probs = tried[best_c]
    thresholds = metrics.tune_thresholds(labels[part["validation"]], validation_probs)
    truth = labels[part["evaluation"]]
    tuned = metrics.score(truth, evaluation_probs, thresholds, films.genres)
    half = metrics.score(truth, evaluation_probs, 0.5, films.genres)
    line = {
        "baseline": name,
        "split_seed": SEED,
        "films": {s: int(mask.sum()) for s, mask in part.items()},
        "micro_f1": round(tuned["micro_f1"], 4),
        "macro_f1": round(tuned["macro_f1"], 4),
        "mAP": round(tuned["mAP"], 4),
        "micro_f1_at_0.5": round(half["micro_f1"], 4),
        "macro_f1_at_0.5": round(half["macro_f1"], 4),
        "label_prior_micro_f1": round(
            metrics.label_prior_micro_f1(labels[part["train"]], truth), 4
        ),
        "C": best_c,
        "validation_mAP_by_C": {str(c): round(v, 4) for c, v in validation_map.items()},
        "dropped": films.dropped,
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(line), flush=True)
    if output:  # a run folder `genre-job compare` reads beside the models' runs
        folder = Path(output)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(json.dumps({"model": name, "baseline": line}))
        scores = {
            "model": name,
            "evaluation_films": int(part["evaluation"].sum()),
            "tuned_thresholds": tuned,
            "threshold_0.5": half,
            "label_prior_micro_f1": line["label_prior_micro_f1"],
        }
        (folder / "metrics.json").write_text(json.dumps(scores, indent=2))
        ids = [i for i, s in zip(films.ids, split, strict=True) if s == "evaluation"]
        frame = predictions_frame(ids, evaluation_probs, thresholds, films.genres, truth)
        (folder / "predictions.csv").write_text(frame.to_csv(index=False))
    return line


def one_vs_rest_logistic(
    c: float, x: np.ndarray, y: np.ndarray, others: list[np.ndarray]
) -> list[np.ndarray]:
    """One logistic regression per genre, fitted on (x, y); probabilities for each of
    `others` (a genre absent from training gets its constant answer)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier

    model = OneVsRestClassifier(LogisticRegression(C=c, max_iter=2000))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Label .*present in all training examples")
        model.fit(x, y.astype(int))
    return [model.predict_proba(other) for other in others]
