"""A synthetic demo dataset in the real dataset's format, learnable by both models.

Each genre has a colour and a band of the poster where it paints a block, and its own
words; a film's poster and overview mix those of its genres, with noise and filler.
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd

from job import storage
from job.config import CSV_NAME, IMAGES_NAME

GENRES = {  # genre: (RGB colour, words)
    "Action": ((220, 40, 30), "explosion chase agent mission fight gun"),
    "Comedy": ((250, 210, 40), "funny wedding prank hilarious misadventure roommate"),
    "Drama": ((60, 90, 160), "family grief struggle tragedy secret letter"),
    "Horror": ((20, 20, 20), "haunted demon blood night terror curse"),
    "Romance": ((230, 120, 170), "love heart kiss passion lovers affair"),
    "Sci-Fi": ((40, 200, 200), "alien planet spaceship robot galaxy future"),
}
FILLER = "a the young man woman city story life must find world new old".split()
WIDTH, HEIGHT = 150, 300  # the real posters' size


def make_films(count: int, seed: int) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    names = list(GENRES)
    rows, posters = [], {}
    for number in range(count):
        chosen = sorted(rng.choice(len(names), size=rng.integers(1, 3), replace=False))
        film_id = f"tt9{number:06d}"
        words = [w for g in chosen for w in rng.choice(GENRES[names[g]][1].split(), 3)]
        words += list(rng.choice(FILLER, 8))
        rng.shuffle(words)
        rows.append(
            {
                "Id": film_id,
                "Genre": str([names[g] for g in chosen]),
                **{name: int(g in chosen) for g, name in enumerate(names)},
                "Overview": " ".join(words).capitalize() + ".",
            }
        )
        poster = rng.normal(128, 30, (HEIGHT, WIDTH, 3))
        band = HEIGHT // len(names)
        for g in chosen:
            poster[g * band : (g + 1) * band, 10 : WIDTH - 10] = GENRES[names[g]][0]
        posters[film_id] = np.clip(poster + rng.normal(0, 20, poster.shape), 0, 255).astype(
            np.uint8
        )
    return pd.DataFrame(rows), posters


def write_demo_data(output: str, count: int = 400, seed: int = 0) -> int:
    """Writes `IMDB_overview_genres.csv` and `Images/<Id>.jpg` under `output`."""
    import tensorflow as tf

    frame, posters = make_films(count, seed)
    for film_id, poster in posters.items():
        jpeg = tf.io.encode_jpeg(poster, quality=90).numpy()
        storage.write_bytes(storage.join(output, IMAGES_NAME, f"{film_id}.jpg"), jpeg)
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False)
    storage.write_text(storage.join(output, CSV_NAME), buffer.getvalue())
    return len(frame)
