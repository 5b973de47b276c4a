"""The film catalogue: `IMDB_overview_genres.csv` read and checked, and the split by Id.

Columns: `Id`, `Genre` (a list as text, informational), one 0/1 column per genre,
`Overview`. Every column other than those three is a genre column.
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from job import storage
from job.errors import InputError

log = logging.getLogger(__name__)

NON_GENRE_COLUMNS = ("Id", "Genre", "Overview")
# A poster's path is built from the Id: only plain names, so it cannot leave the images folder.
SAFE_ID = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}$")
SPLITS = ("train", "validation", "evaluation")
# Overviews are a paragraph; the model reads the first 100 tokens. Longer texts are cut
# (a 10 MB overview would otherwise take minutes to vectorize and skew the vocabulary).
MAX_OVERVIEW_CHARS = 10_000


@dataclass
class Catalogue:
    ids: list[str]
    overviews: list[str]
    genres: list[str]
    labels: np.ndarray | None  # (films, genres) float32 multi-hot; None when unlabelled
    dropped: dict[str, int] = field(default_factory=dict)
    why_dropped: dict[str, str] = field(default_factory=dict)  # Id -> the reason

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, keep: np.ndarray) -> Catalogue:
        """The films where the boolean mask `keep` is true."""
        index = np.flatnonzero(keep)
        return Catalogue(
            ids=[self.ids[i] for i in index],
            overviews=[self.overviews[i] for i in index],
            genres=self.genres,
            labels=None if self.labels is None else self.labels[index],
            dropped=dict(self.dropped),
            why_dropped=dict(self.why_dropped),
        )

    def has_overview(self) -> np.ndarray:
        """Mask of the films with a non-empty overview (what lstm and fusion can use)."""
        return np.array([bool(o) for o in self.overviews], dtype=bool)

    def drop(self, keep: np.ndarray, reason: str) -> Catalogue:
        """Drop the films where `keep` is false, counting and logging them under `reason`."""
        count = int((~keep).sum())
        if count:
            examples = [self.ids[i] for i in np.flatnonzero(~keep)[:5]]
            log.warning("dropped %d films: %s (e.g. %s)", count, reason, ", ".join(examples))
        result = self.subset(keep)
        result.dropped[reason] = result.dropped.get(reason, 0) + count
        result.why_dropped.update((self.ids[i], reason) for i in np.flatnonzero(~keep))
        return result


def read_catalogue(csv_url: str, genres: list[str] | None = None) -> Catalogue:
    """Read and check the CSV. With `genres` (prediction) labels are optional."""
    try:
        raw = storage.read_bytes(csv_url)
    except FileNotFoundError:
        raise InputError(f"{csv_url}: no such file", "check --data and --csv") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise InputError(f"{csv_url}: not UTF-8 text (byte {error.start})") from None
    if not text.strip():
        raise InputError(f"{csv_url}: the file is empty")
    try:
        frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, ValueError) as error:
        reason = str(error).strip().splitlines()[-1]
        raise InputError(f"{csv_url}: not a readable CSV ({reason})") from None
    missing = [c for c in ("Id", "Overview") if c not in frame.columns]
    if missing:
        raise InputError(f"{csv_url}: missing column(s) {', '.join(missing)}")
    if genres is None:
        genres = [c for c in frame.columns if c not in NON_GENRE_COLUMNS]
        if not genres:
            raise InputError(f"{csv_url}: no genre columns (0/1 columns besides Id/Genre/Overview)")
        labels = _labels(frame, genres, csv_url)
    else:
        labels = _optional_labels(frame, genres, csv_url)
    if frame.empty:
        raise InputError(f"{csv_url}: the CSV has a header but no films")
    overviews = [o.strip() for o in frame["Overview"]]
    long = sum(len(o) > MAX_OVERVIEW_CHARS for o in overviews)
    if long:
        log.warning("cut %d overviews to their first %d characters", long, MAX_OVERVIEW_CHARS)
        overviews = [o[:MAX_OVERVIEW_CHARS] for o in overviews]
    catalogue = Catalogue(
        ids=[i.strip() for i in frame["Id"]],
        overviews=overviews,
        genres=list(genres),
        labels=labels,
    )
    catalogue = catalogue.drop(
        np.array([bool(SAFE_ID.match(i)) for i in catalogue.ids], dtype=bool),
        "unsafe or empty Id",
    )
    seen: set[str] = set()
    first = np.array([not (i in seen or seen.add(i)) for i in catalogue.ids], dtype=bool)
    return catalogue.drop(first, "duplicate Id")


def _labels(
    frame: pd.DataFrame, genres: list[str], csv_url: str, blanks: bool = False
) -> np.ndarray:
    """The 0/1 genre cells as float32 (films, genres); with `blanks`, an empty cell is 0."""
    values = frame[genres].apply(lambda column: column.str.strip())
    bad = ~values.isin(["0", "1", ""] if blanks else ["0", "1"])
    if bad.to_numpy().any():
        row, column = np.argwhere(bad.to_numpy())[0]
        allowed = "0, 1 or empty" if blanks else "0 or 1"
        raise InputError(
            f"{csv_url}: genre column {genres[column]!r} holds {values.iat[row, column]!r} "
            f"on line {row + 2}; genre values must be {allowed}"
        )
    return (values == "1").to_numpy(dtype=np.float32)


def _optional_labels(frame: pd.DataFrame, genres: list[str], csv_url: str) -> np.ndarray | None:
    """Labels of films to predict (a model's `genres`): only when every one of them is a
    column, blank cells allowed (a template). Columns that do not match the model's genres
    are named in one warning, not ignored silently."""
    other = [c for c in frame.columns if c not in NON_GENRE_COLUMNS and c not in genres]
    missing = [g for g in genres if g not in frame.columns]
    problems = []
    if other:
        problems.append(f"column(s) not among the model's genres, ignored: {some(other)}")
    if missing and (other or len(missing) < len(genres)):
        problems.append(
            f"no true_genres: {len(missing)} of the model's {len(genres)} genres missing"
            f" ({some(missing)})"
        )
    if problems:
        log.warning("%s: %s", csv_url, "; ".join(problems))
    return None if missing else _labels(frame, genres, csv_url, blanks=True)


def some(items: list[str], count: int = 5) -> str:
    """The first `count` of `items`, comma-separated, and how many more: for one-line messages."""
    more = f" and {len(items) - count} more" if len(items) > count else ""
    return ", ".join(items[:count]) + more


def split_of(ids: list[str], seed: int, validation: float, evaluation: float) -> np.ndarray:
    """'train' / 'validation' / 'evaluation' for each Id, from a stable hash of seed and Id.

    The same Id lands in the same split in every run and for every model, whatever
    other films the catalogue holds.
    """

    def fraction(film_id: str) -> float:
        digest = hashlib.sha256(f"{seed}:{film_id}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64

    cuts = np.array([fraction(i) for i in ids])
    return np.where(
        cuts < 1 - validation - evaluation,
        "train",
        np.where(cuts < 1 - evaluation, "validation", "evaluation"),
    )
