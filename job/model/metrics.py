"""Multi-label scores and per-genre thresholds, in NumPy.

y_true: (films, genres) 0/1; y_prob: (films, genres) probabilities in [0, 1].
"""

from __future__ import annotations

import numpy as np

THRESHOLD_GRID = np.round(np.arange(0.05, 0.951, 0.01), 2)


def _f1(true_positives: np.ndarray, predicted: np.ndarray, actual: np.ndarray) -> np.ndarray:
    denominator = predicted + actual
    return np.divide(
        2 * true_positives,
        denominator,
        out=np.zeros_like(denominator, dtype=float),
        where=denominator > 0,
    )


def tune_thresholds(y_true: np.ndarray, y_prob: np.ndarray, passes: int = 2) -> np.ndarray:
    """One threshold per genre, chosen on these (validation) films to maximise micro-F1.

    Starts from the best single threshold, then moves one genre's threshold at a time to
    where micro-F1 over all genres is highest (coordinate ascent). Maximising each genre's
    own F1 instead lowers the thresholds of rare genres until they are predicted for many
    films, which costs more in precision than it wins: on the real films it took a CNN's
    micro-F1 from 0.41 at 0.5 down to 0.31.
    """
    y_true = y_true.astype(bool)
    best_single = max(THRESHOLD_GRID, key=lambda t: micro_f1(y_true, y_prob >= t))
    thresholds = np.full(y_true.shape[1], best_single, dtype=float)
    predicted = y_prob >= thresholds[None, :]
    actual_total = y_true.sum()
    for _ in range(passes):
        for genre in range(y_true.shape[1]):
            others = np.ones(y_true.shape[1], dtype=bool)
            others[genre] = False
            true_positives_rest = (predicted[:, others] & y_true[:, others]).sum()
            predicted_rest = predicted[:, others].sum()
            candidates = y_prob[:, genre][:, None] >= THRESHOLD_GRID[None, :]  # (films, grid)
            true_positives = true_positives_rest + (candidates & y_true[:, genre][:, None]).sum(0)
            f1 = _f1(true_positives, predicted_rest + candidates.sum(0), actual_total)
            current = f1[np.argmin(np.abs(THRESHOLD_GRID - thresholds[genre]))]
            if f1.max() > current + 1e-12:
                thresholds[genre] = THRESHOLD_GRID[int(np.argmax(f1))]
                predicted[:, genre] = y_prob[:, genre] >= thresholds[genre]
    return thresholds


def micro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    y_true, y_pred = y_true.astype(bool), y_pred.astype(bool)
    return float(
        _f1(np.array((y_true & y_pred).sum()), np.array(y_pred.sum()), np.array(y_true.sum()))
    )


def average_precision(actual: np.ndarray, scores: np.ndarray) -> float:
    """Area under the precision-recall curve as a step sum (scikit-learn's definition)."""
    order = np.argsort(-scores, kind="mergesort")
    actual, scores = actual[order].astype(bool), scores[order]
    # Cut only where the score changes, so tied scores count together.
    cuts = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]
    true_positives = np.cumsum(actual)[cuts]
    precision = true_positives / (cuts + 1)
    recall = true_positives / actual.sum()
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def score(
    y_true: np.ndarray, y_prob: np.ndarray, thresholds: np.ndarray | float, genres: list[str]
) -> dict:
    """micro-, macro- (genres with positives) and samples-F1, mAP, and per-genre figures."""
    y_true = y_true.astype(bool)
    y_pred = y_prob >= np.broadcast_to(thresholds, (y_true.shape[1],))[None, :]
    true_positives = (y_true & y_pred).sum(0)
    predicted, actual = y_pred.sum(0), y_true.sum(0)
    genre_f1 = _f1(true_positives, predicted, actual)
    has_positives = actual > 0
    per_film = _f1((y_true & y_pred).sum(1), y_pred.sum(1), y_true.sum(1))
    per_genre = {
        genre: {
            "precision": float(true_positives[g] / predicted[g]) if predicted[g] else 0.0,
            "recall": float(true_positives[g] / actual[g]) if actual[g] else 0.0,
            "f1": float(genre_f1[g]),
            "support": int(actual[g]),
            "average_precision": (
                average_precision(y_true[:, g], y_prob[:, g]) if has_positives[g] else None
            ),
        }
        for g, genre in enumerate(genres)
    }
    average_precisions = [
        p["average_precision"] for p in per_genre.values() if p["average_precision"] is not None
    ]
    return {
        "films": int(len(y_true)),
        "micro_f1": micro_f1(y_true, y_pred),
        "micro_precision": float(true_positives.sum() / max(predicted.sum(), 1)),
        "micro_recall": float(true_positives.sum() / max(actual.sum(), 1)),
        "macro_f1": float(genre_f1[has_positives].mean()) if has_positives.any() else 0.0,
        "samples_f1": float(per_film.mean()) if len(per_film) else 0.0,
        "mAP": float(np.mean(average_precisions)) if average_precisions else 0.0,
        "per_genre": per_genre,
    }


def label_prior_micro_f1(train_labels: np.ndarray, eval_labels: np.ndarray) -> float:
    """Baseline: answer the k most frequent training genres for every film, best k."""
    order = np.argsort(-train_labels.mean(0), kind="mergesort")
    best = 0.0
    for k in range(1, len(order) + 1):
        guess = np.zeros(eval_labels.shape[1], dtype=bool)
        guess[order[:k]] = True
        best = max(best, micro_f1(eval_labels, np.broadcast_to(guess, eval_labels.shape)))
    return best
