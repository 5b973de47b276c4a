"""Baseline on overviews: TF-IDF (words and word pairs) + one-vs-rest logistic regression,
on the job's own split; per-genre thresholds tuned on validation. One JSON line.

    python scripts/baseline_tfidf.py [DATASET_ROOT [RUN_FOLDER]]
"""

from __future__ import annotations

import sys

import baselinelib
import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer

GRID = (1.0, 3.0, 10.0, 30.0)  # logistic regression's C, chosen on validation mAP


def main() -> None:
    films = baselinelib.films(baselinelib.data_root(sys.argv))
    # As the lstm does: films without an overview are dropped.
    films = films.drop(films.has_overview(), "no overview")

    def fit_predict(c, x, y, others):
        # The vocabulary and IDF come from the training overviews only.
        vectorizer = TfidfVectorizer(
            ngram_range=(1, 2), min_df=2, sublinear_tf=True, stop_words="english"
        )
        train = vectorizer.fit_transform(x)
        return baselinelib.one_vs_rest_logistic(
            c, train, y, [vectorizer.transform(other) for other in others]
        )

    overviews = np.array(films.overviews, dtype=object)
    output = sys.argv[2] if len(sys.argv) > 2 else None
    baselinelib.run("tfidf_logistic", films, overviews, fit_predict, GRID, output)


if __name__ == "__main__":
    main()
