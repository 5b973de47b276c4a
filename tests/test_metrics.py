"""Scores checked against hand-worked examples."""

from __future__ import annotations

import numpy as np
import pytest

from job.model.metrics import average_precision, label_prior_micro_f1, score, tune_thresholds

TRUE = np.array([[1, 0], [1, 1], [0, 0], [0, 1]])
PROB = np.array([[0.9, 0.2], [0.4, 0.8], [0.6, 0.1], [0.3, 0.3]])


def test_scores_at_a_threshold():
    scores = score(TRUE, PROB, 0.5, ["A", "B"])

    # A: predicted films 0, 2 (tp 1, fp 1, fn 1); B: predicted film 1 (tp 1, fn 1).
    # A's ranking 0.9+ 0.6- 0.4+ 0.3-: precision 1 at the first positive, 2/3 at the second.
    assert scores["per_genre"]["A"] == pytest.approx(
        {
            "precision": 0.5,
            "recall": 0.5,
            "f1": 0.5,
            "support": 2,
            "average_precision": (1 + 2 / 3) / 2,
        }
    )
    assert scores["per_genre"]["B"]["f1"] == pytest.approx(2 / 3)
    assert scores["micro_f1"] == pytest.approx(2 * 2 / (3 + 4))
    assert scores["macro_f1"] == pytest.approx((0.5 + 2 / 3) / 2)
    # Per film F1: 1, 2/3, 0 (nothing true, one predicted), 0.
    assert scores["samples_f1"] == pytest.approx((1 + 2 / 3) / 4)


def test_a_genre_without_positives_is_left_out_of_map_and_macro_f1():
    # C has no film among these, and one predicted (film 2): no AP, not in the averages.
    true = np.column_stack([TRUE, np.zeros(4, int)])
    prob = np.column_stack([PROB, [0.1, 0.2, 0.7, 0.4]])
    scores = score(true, prob, 0.5, ["A", "B", "C"])

    assert scores["per_genre"]["C"]["average_precision"] is None
    # B's ranking 0.8+ 0.3+ 0.2- 0.1-: AP 1.
    assert scores["mAP"] == pytest.approx(((1 + 2 / 3) / 2 + 1) / 2)
    assert scores["macro_f1"] == pytest.approx((0.5 + 2 / 3) / 2)
    # C's false positive still counts in the micro figures: 2 tp of 4 predicted, 4 true.
    assert scores["micro_f1"] == pytest.approx(2 * 2 / (4 + 4))


def test_average_precision_counts_tied_scores_together():
    assert average_precision(np.array([1, 0]), np.array([0.5, 0.5])) == pytest.approx(0.5)
    assert average_precision(np.array([0, 1, 1]), np.array([0.9, 0.8, 0.1])) == pytest.approx(
        (1 / 2 + 2 / 3) / 2
    )


def test_thresholds_maximise_micro_f1_genre_by_genre():
    labels = np.array([[1, 0], [0, 1], [1, 1], [0, 0]])
    # A separates in (0.6, 0.8], B only in (0.1, 0.25]: no single threshold does both.
    probs = np.array([[0.9, 0.1], [0.6, 0.3], [0.8, 0.25], [0.5, 0.05]])

    thresholds = tune_thresholds(labels, probs)

    assert 0.6 < thresholds[0] <= 0.8
    assert 0.1 < thresholds[1] <= 0.25
    assert score(labels, probs, thresholds, ["A", "B"])["micro_f1"] == 1.0
    assert max(score(labels, probs, t, ["A", "B"])["micro_f1"] for t in (0.2, 0.5, 0.7)) < 1.0


def test_tuned_thresholds_never_lose_to_the_best_single_threshold():
    rng = np.random.default_rng(0)
    labels = rng.random((300, 6)) < [0.5, 0.3, 0.1, 0.05, 0.02, 0.0]
    probs = np.clip(labels * 0.2 + rng.random((300, 6)) * 0.8, 0, 1)

    tuned = score(labels, probs, tune_thresholds(labels, probs), list("abcdef"))["micro_f1"]

    singles = [
        score(labels, probs, t, list("abcdef"))["micro_f1"] for t in np.arange(0.05, 0.96, 0.01)
    ]
    assert tuned >= max(singles) - 1e-12


def test_label_prior_answers_the_most_frequent_genres():
    train = np.array([[1, 0, 0], [1, 1, 0], [1, 0, 0]])
    evaluation = np.array([[1, 0, 0], [0, 1, 0]])

    # Answering A alone: tp 1, predicted 2, actual 2 -> F1 0.5; A and B: tp 2, 4, 2 -> 2/3.
    assert label_prior_micro_f1(train, evaluation) == pytest.approx(2 / 3)
