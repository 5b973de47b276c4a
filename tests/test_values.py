"""Values pinned literally: the split of a few Ids (a changed hash or cut moves them), and
a probability exactly at its genre's threshold counting as predicted."""

from __future__ import annotations

import numpy as np
from runcheck import split_by_hash

from job.data.catalogue import split_of
from job.predict import predictions_frame

IDS = [f"tt9{n:06d}" for n in range(25)]
# Every Id not listed is "train".
PINNED = {
    42: {
        "tt9000000": "evaluation",
        "tt9000003": "validation",
        "tt9000006": "validation",
        "tt9000018": "evaluation",
        "tt9000023": "validation",
    },
    7: {"tt9000005": "evaluation", "tt9000014": "evaluation", "tt9000023": "validation"},
}


def test_the_split_of_these_ids_never_changes():
    for seed, pinned in PINNED.items():
        expected = [pinned.get(i, "train") for i in IDS]
        assert split_of(IDS, seed, 0.1, 0.1).tolist() == expected
        # the rule written out in tests/runcheck.py agrees (check_run relies on it)
        assert [split_by_hash(i, seed, 0.1, 0.1) for i in IDS] == expected


def test_an_ids_split_does_not_depend_on_the_other_films():
    alone = [split_of([i], 42, 0.1, 0.1)[0] for i in IDS]
    assert alone == split_of(IDS[::-1], 42, 0.1, 0.1)[::-1].tolist()


def test_a_probability_at_its_threshold_is_predicted():
    genres = ["Action", "Comedy", "Drama"]
    probs = np.array([[0.5, 0.3, 0.29], [0.49, 0.31, 0.9]])
    labels = np.array([[1, 0, 0], [0, 0, 1]], dtype=np.float32)

    frame = predictions_frame(["a", "b"], probs, np.array([0.5, 0.3, 0.3]), genres, labels)

    assert frame["predicted_genres"].tolist() == ["Action|Comedy", "Comedy|Drama"]
    assert frame["true_genres"].tolist() == ["Action", "Drama"]
    assert frame["prob_Drama"].tolist() == [0.29, 0.9]
