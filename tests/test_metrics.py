"""Scores checked against hand-worked examples."""

from __future__ import annotations

import numpy as np
import pytest

from job.metrics import average_precision, label_prior_micro_f1, score, tune_thresholds

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


def test_average_precision_counts_tied_scores_together():
    assert average_precision(np.array([1, 0]), np.array([0.5, 0.5])) == pytest.approx(0.5)
    assert average_precision(np.array([0, 1, 1]), np.array([0.9, 0.8, 0.1])) == pytest.approx(
        (1 / 2 + 2 / 3) / 2
    )


def test_thresholds_maximise_each_genres_f1():
    thresholds = tune_thresholds(TRUE, PROB)

    # A (0.9+ 0.6- 0.4+ 0.3-): best F1 0.8 with both positives and one false positive,
    # threshold in (0.3, 0.4]. B (0.8+ 0.3+ 0.2- 0.1-): perfect in (0.2, 0.3].
    assert 0.3 < thresholds[0] <= 0.4
    assert 0.2 < thresholds[1] <= 0.3
    assert score(TRUE, PROB, thresholds, ["A", "B"])["per_genre"]["A"]["f1"] == pytest.approx(0.8)
    assert score(TRUE, PROB, thresholds, ["A", "B"])["per_genre"]["B"]["f1"] == 1.0


def test_label_prior_answers_the_most_frequent_genres():
    train = np.array([[1, 0, 0], [1, 1, 0], [1, 0, 0]])
    evaluation = np.array([[1, 0, 0], [0, 1, 0]])

    # Answering A alone: tp 1, predicted 2, actual 2 -> F1 0.5; A and B: tp 2, 4, 2 -> 2/3.
    assert label_prior_micro_f1(train, evaluation) == pytest.approx(2 / 3)
