"""Baseline on posters: a colour histogram (8x8x8 RGB bins of the poster resized to 64x64,
as the cnn sees it) + one-vs-rest logistic regression, on the job's own split; per-genre
thresholds tuned on validation. One JSON line.

    python scripts/baseline_colour.py [DATASET_ROOT [RUN_FOLDER]]
"""

from __future__ import annotations

import sys
from pathlib import Path

import baselinelib
import numpy as np
from PIL import Image

BINS = 8
SIZE = 64
GRID = (0.001, 0.01, 0.1, 1.0)  # logistic regression's C, chosen on validation mAP


def histogram(path: Path) -> np.ndarray | None:
    """The poster's normalised joint RGB histogram (square-rooted), or None if unreadable."""
    try:
        with Image.open(path) as image:
            image.draft("RGB", (SIZE * 2, SIZE * 2))
            pixels = np.asarray(image.convert("RGB").resize((SIZE, SIZE), Image.BILINEAR))
    except (OSError, ValueError):
        return None
    bins = (pixels // (256 // BINS)).reshape(-1, 3).astype(int)
    index = (bins[:, 0] * BINS + bins[:, 1]) * BINS + bins[:, 2]
    counts = np.bincount(index, minlength=BINS**3).astype(np.float32)
    return np.sqrt(counts / counts.sum())


def main() -> None:
    root = baselinelib.data_root(sys.argv)
    films = baselinelib.films(root)
    found = [histogram(root / "Images" / f"{film_id}.jpg") for film_id in films.ids]
    # As the cnn does: films without a readable poster are dropped.
    films = films.drop(np.array([h is not None for h in found]), "no readable poster")
    features = np.stack([h for h in found if h is not None])

    def fit_predict(c, x, y, others):
        mean, std = x.mean(0), x.std(0) + 1e-6  # standardised on the training posters
        standard = [(other - mean) / std for other in others]
        return baselinelib.one_vs_rest_logistic(c, (x - mean) / std, y, standard)

    output = sys.argv[2] if len(sys.argv) > 2 else None
    baselinelib.run("colour_histogram_logistic", films, features, fit_predict, GRID, output)


if __name__ == "__main__":
    main()
