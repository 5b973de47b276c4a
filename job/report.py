"""A finished run in pictures, and runs side by side.

`write_report` writes into the run folder (each file in one piece, through job.storage):
  examples.png / examples.html  evaluation films: poster, overview, true and predicted genres
  training.png                  loss, precision and recall per epoch, train and validation
  per_genre.png                 F1 per genre at the tuned thresholds, with support
`compare_runs` puts the scores of several runs in one table.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import logging
import math
import textwrap
from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from PIL import Image

from job import storage
from job.config import CSV_NAME, IMAGES_NAME
from job.data import poster_files
from job.data.catalogue import read_catalogue
from job.errors import InputError
from job.progress import Progress
from job.storage import fetching

log = logging.getLogger(__name__)

COLUMNS = 3  # films per row of examples.png
COLOURS = {"right": "#1a7f37", "wrong": "#c62828", "missed": "#9e6a03", "none": "gray"}
THUMBNAIL = (150, 300)


@dataclass
class Film:
    id: str
    overview: str
    poster: Image.Image | None
    jpeg: bytes | None  # the poster as embedded in the HTML
    true: list[str]
    predicted: list[tuple[str, float]]  # (genre, probability), the most likely first


def _read(url: str) -> bytes:
    try:
        return storage.read_bytes(url)
    except FileNotFoundError:
        raise InputError(f"{url}: no such file", "point --run at a finished run") from None


def _read_json(url: str) -> dict:
    return json.loads(_read(url))


def _read_csv(url: str) -> pd.DataFrame:
    return pd.read_csv(io.BytesIO(_read(url)), dtype={"Id": str}, keep_default_na=False)


def _png(figure: Figure) -> bytes:
    FigureCanvasAgg(figure)
    figure.savefig(buffer := io.BytesIO(), format="png", dpi=100, facecolor="white")
    return buffer.getvalue()


def _poster(blob: bytes | None) -> tuple[Image.Image | None, bytes | None]:
    """The decoded poster (thumbnail) and JPEG bytes for the HTML; (None, None) if unusable."""
    try:
        if blob is None:
            raise ValueError("missing")
        with Image.open(io.BytesIO(blob)) as image:
            if image.width * image.height > 25_000_000:  # the job's bomb guard
                raise ValueError("too many pixels")
            image.draft("RGB", THUMBNAIL)
            poster = image.convert("RGB")
        poster.thumbnail(THUMBNAIL)
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        log.warning("report: poster skipped (%s)", error)
        return None, None
    poster.save(buffer := io.BytesIO(), format="JPEG", quality=85)
    return poster, buffer.getvalue()


def _choose(predictions: pd.DataFrame, ids: list[str] | None, count: int, seed: int) -> list[int]:
    if ids:
        rows = {film_id: row for row, film_id in enumerate(predictions["Id"])}
        missing = [i for i in ids if i not in rows]
        if missing:
            raise InputError(f"not among the run's evaluation films: {', '.join(missing[:5])}")
        return [rows[i] for i in ids]
    chosen = np.random.default_rng(seed).choice(
        len(predictions), min(count, len(predictions)), False
    )
    return sorted(chosen.tolist())


def load_films(
    run_url: str, data_url: str | None, ids: list[str] | None, count: int, seed: int
) -> list[Film]:
    """The chosen evaluation films with their posters, overviews and genres."""
    config = _read_json(storage.join(run_url, "config.json"))
    predictions = _read_csv(storage.join(run_url, "predictions.csv"))
    data = data_url or config["data"]
    genres = [c.removeprefix("prob_") for c in predictions.columns if c.startswith("prob_")]
    rows = predictions.iloc[_choose(predictions, ids, count, seed)]
    catalogue = read_catalogue(storage.join(data, config.get("csv") or CSV_NAME), genres)
    overviews = dict(zip(catalogue.ids, catalogue.overviews, strict=True))
    images = storage.join(data, config.get("images") or IMAGES_NAME)
    names = poster_files.find_posters(images, rows["Id"].tolist())
    fetched = iter(fetching.fetch_many([storage.join(images, n) for n in names if n is not None]))
    blobs = [None if name is None else next(fetched) for name in names]
    films = []
    for (_, row), blob in zip(rows.iterrows(), blobs, strict=True):
        guessed = [
            (g, float(row[f"prob_{g}"])) for g in str(row["predicted_genres"]).split("|") if g
        ]
        guessed.sort(key=lambda pair: -pair[1])
        overview, true = overviews.get(row["Id"], ""), str(row.get("true_genres", "")).split("|")
        films.append(Film(row["Id"], overview, *_poster(blob), [g for g in true if g], guessed))
    return films


def _marked(film: Film) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(label, kind) for the true and the predicted genres; kind: right, wrong, missed, none."""
    predicted = {g for g, _ in film.predicted}
    true = [(g, "right") if g in predicted else (f"{g} (missed)", "missed") for g in film.true]
    guessed = [
        (f"✓ {g} {p:.2f}", "right") if g in film.true else (f"✗ {g} {p:.2f}", "wrong")
        for g, p in film.predicted
    ]
    return true or [("(none)", "none")], guessed or [("(none)", "none")]


def _lines(film: Film) -> list[tuple[str, str, str]]:
    """(text, colour, weight) lines beside a poster."""
    overview = textwrap.wrap(film.overview, 42) or ["(no overview)"]
    if len(overview) > 6:
        overview = [*overview[:5], overview[5][:40] + " …"]
    true, guessed = _marked(film)
    return [
        (film.id, "black", "bold"),
        *[(text, "#333333", "normal") for text in overview],
        ("True:", "black", "bold"),
        *[(f"  {label}", COLOURS[kind], "normal") for label, kind in true],
        ("Predicted:", "black", "bold"),
        *[(f"  {label}", COLOURS[kind], "normal") for label, kind in guessed],
    ]


def examples_figure(films: list[Film]) -> Figure:
    rows = max(1, math.ceil(len(films) / COLUMNS))
    height = 3.4 * rows
    figure = Figure(figsize=(5.2 * COLUMNS, height))
    grid = figure.add_gridspec(rows, 2 * COLUMNS, width_ratios=[0.75, 1.9] * COLUMNS)
    for index, film in enumerate(films):
        row, column = divmod(index, COLUMNS)
        picture = figure.add_subplot(grid[row, 2 * column])
        picture.set_axis_off()
        if film.poster is not None:
            picture.imshow(np.asarray(film.poster))
        else:
            picture.text(0.5, 0.5, "no poster", ha="center", va="center", color="gray")
        text = figure.add_subplot(grid[row, 2 * column + 1])
        text.set_axis_off()
        for line, (words, colour, weight) in enumerate(_lines(film)[:20]):
            text.text(
                0.02, 1 - line * 0.05, words, color=colour, fontweight=weight,
                fontsize=8, va="top", transform=text.transAxes, parse_math=False,
            )  # fmt: skip
    # Title and margin in inches, so the title clears the first row at any number of rows.
    figure.suptitle(
        "Evaluation films: true and predicted genres", fontsize=12, y=1 - 0.12 / height, va="top"
    )
    figure.subplots_adjust(left=0.01, right=0.99, top=1 - 0.5 / height, bottom=0.02)
    return figure


def examples_png(films: list[Film]) -> bytes:
    return _png(examples_figure(films))


def examples_html(films: list[Film], run_url: str) -> str:
    def items(marked: list[tuple[str, str]]) -> str:
        return "".join(f'<li class="{kind}">{html.escape(label)}</li>' for label, kind in marked)

    cards = []
    for film in films:
        poster = '<div class="none">no poster</div>'
        if film.jpeg:
            poster = f'<img alt="poster" src="data:image/jpeg;base64,{base64.b64encode(film.jpeg).decode()}">'  # noqa: E501
        true, guessed = _marked(film)
        cards.append(
            f'<div class="film">{poster}<div><h2>{html.escape(film.id)}</h2>'
            f"<p>{html.escape(textwrap.shorten(film.overview, 1000, placeholder=' …'))}</p>"
            f"<h3>True</h3><ul>{items(true)}</ul><h3>Predicted</h3><ul>{items(guessed)}</ul>"
            "</div></div>"
        )
    style = (
        "body{font-family:sans-serif;margin:1em}.grid{display:grid;"
        "grid-template-columns:repeat(auto-fill,minmax(420px,1fr));gap:1em}"
        ".film{display:flex;gap:.8em;border:1px solid #ddd;padding:.6em}"
        ".film img{width:150px;height:auto;align-self:flex-start}h2{font-size:1em;margin:0}"
        "h3{font-size:.9em;margin:.4em 0 0}ul{margin:0;padding-left:1.2em}p{font-size:.9em}"
        + "".join(f".{kind}{{color:{colour}}}" for kind, colour in COLOURS.items())
    )
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        f"<title>{html.escape(run_url)}: evaluation films</title><style>{style}</style></head>"
        f'<body><h1>{html.escape(run_url)}</h1><div class="grid">{"".join(cards)}</div>'
        "</body></html>\n"
    )


def training_png(history: pd.DataFrame) -> bytes:
    figure = Figure(figsize=(15, 4.2))
    if "epoch" in history:  # 1-based; runs from before numbered them from 0
        epochs = history["epoch"] + (1 if history["epoch"].min() == 0 else 0)
    else:
        epochs = pd.Series(range(1, len(history) + 1))
    for index, name in enumerate(("loss", "precision", "recall")):
        axes = figure.add_subplot(1, 3, index + 1)
        for column, label in ((name, "train"), (f"val_{name}", "validation")):
            if column in history:
                axes.plot(epochs, history[column], "o-", label=label, markersize=4)
        axes.set(title=name, xlabel="epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(alpha=0.3)
        axes.legend()
    figure.tight_layout()
    return _png(figure)


def per_genre_figure(metrics: dict) -> Figure:
    tuned = metrics["tuned_thresholds"]
    per_genre = tuned["per_genre"]
    genres = list(per_genre)
    f1, support = [per_genre[g]["f1"] for g in genres], [per_genre[g]["support"] for g in genres]
    figure = Figure(figsize=(8, 1.5 + 0.32 * len(genres)))
    axes = figure.add_subplot(1, 1, 1)
    positions = np.arange(len(genres))
    axes.barh(positions, f1, color=["#1f77b4" if s else "#bbbbbb" for s in support])
    # Each figure just past its bar's end; the x axis runs past 1 so an F1 of 1 has room.
    for position, value, count in zip(positions, f1, support, strict=True):
        axes.text(value + 0.01, position, f"{value:.2f}  n={count}", va="center", fontsize=8)
    # The micro-F1 line is named in the title, not a legend that would cover bars.
    axes.axvline(tuned["micro_f1"], color="black", linestyle="--", linewidth=1)
    axes.set_yticks(positions, genres, fontsize=8)
    axes.invert_yaxis()
    axes.set(
        xlim=(0, 1.2),
        xticks=np.linspace(0, 1, 6),
        xlabel="F1 on the evaluation films (tuned thresholds); n = films with the genre",
        title=(
            f"F1 per genre: macro-F1 {tuned['macro_f1']:.3f}, dashed line micro-F1"
            f" {tuned['micro_f1']:.3f}; grey: no positives"
        ),
    )
    figure.tight_layout()
    return figure


def per_genre_png(metrics: dict) -> bytes:
    return _png(per_genre_figure(metrics))


def write_report(
    run_url: str,
    data_url: str | None = None,
    ids: list[str] | None = None,
    count: int = 12,
    seed: int = 0,
) -> list[str]:
    """Writes examples.png, examples.html, training.png (not for an ensemble: it has no
    history.csv) and per_genre.png into the run folder; returns their URLs. Films: `ids`,
    or `count` evaluation films drawn with `seed`."""
    films = load_films(run_url, data_url, ids, count, seed)
    metrics = _read_json(storage.join(run_url, "metrics.json"))
    renderers = {
        "examples.png": lambda: examples_png(films),
        "examples.html": lambda: examples_html(films, run_url).encode("utf-8"),
    }
    history_url = storage.join(run_url, "history.csv")
    if storage.exists(history_url):  # an ensemble (job/ensemble.py) trained no epochs
        history = _read_csv(history_url)
        renderers["training.png"] = lambda: training_png(history)
    renderers["per_genre.png"] = lambda: per_genre_png(metrics)
    outputs = {}  # all rendered before any is written: a failure leaves the run as it was
    with Progress("render report", len(renderers), "files") as progress:
        for name, render in renderers.items():
            outputs[name] = render()
            progress.advance(1)
    for name, data in outputs.items():
        storage.write_bytes(storage.join(run_url, name), data)
    log.info("report: %d films, written to %s", len(films), run_url)
    return [storage.join(run_url, name) for name in outputs]


# A run's setting is its config less the seed and where and how it ran: runs that differ
# only in these are repeats of one setting, and compare shows their mean and spread.
NOT_SETTINGS = frozenset(
    {"seed", "output", "checkpoint_dir", "tensorboard_dir", "run", "overwrite", "cache",
     "cache_dir", "cpu_replicas"}
)  # fmt: skip
SPREAD_SCORES = ("micro_f1", "macro_f1", "mAP")


def setting_of(config: dict) -> str:
    """`model/recipe` and a digest of the other settings: equal for runs that differ only
    in their seed; an ensemble's (job/ensemble.py) ends in `/ensemble-<its run count>`."""
    settings = {k: v for k, v in config.items() if k not in NOT_SETTINGS}
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:6]
    members = config.get("run", {}).get("ensemble_of")
    ensemble = f"/ensemble-{len(members)}" if members else ""
    return f"{config.get('model')}/{config.get('recipe')}#{digest}{ensemble}"


def compare_runs(run_urls: list[str]) -> pd.DataFrame:
    """One row per run: its scores on the evaluation films (tuned thresholds unless said)."""
    rows = []
    for run_url in run_urls:
        config = _read_json(storage.join(run_url, "config.json"))
        metrics = _read_json(storage.join(run_url, "metrics.json"))
        tuned = metrics["tuned_thresholds"]
        row = {"run": run_url.rstrip("/").rsplit("/", 1)[-1], "model": config.get("model")}
        row |= {"setting": setting_of(config), "seed": config.get("seed")}
        row |= {key: tuned[key] for key in SPREAD_SCORES}
        row["micro_f1_at_0.5"] = metrics["threshold_0.5"]["micro_f1"]
        row["label_prior_micro_f1"] = metrics["label_prior_micro_f1"]
        rows.append(row | {f"f1_{g}": v["f1"] for g, v in tuned["per_genre"].items()})
    return pd.DataFrame(rows)


def spread_over_seeds(frame: pd.DataFrame) -> pd.DataFrame:
    """For each setting with two runs or more: how many, and each score's mean, sample
    standard deviation, minimum and maximum."""
    repeated = frame.groupby("setting", sort=False).filter(lambda runs: len(runs) > 1)
    if repeated.empty:
        return pd.DataFrame()
    groups = repeated.groupby("setting", sort=False)
    table = groups.size().rename("runs").to_frame()
    for score in SPREAD_SCORES:
        stats = groups[score].agg(["mean", "std", "min", "max"])
        table[[f"{score}_{stat}" for stat in stats.columns]] = stats.to_numpy()
    return table.reset_index()


def format_comparison(frame: pd.DataFrame) -> str:
    """The summary columns one run a line, the mean and spread of repeated settings, then
    F1 per genre one genre a line."""
    genre_columns = [c for c in frame.columns if c.startswith("f1_")]
    summary = frame.drop(columns=genre_columns)
    text = summary.to_string(index=False, float_format=lambda v: f"{v:.3f}", na_rep="-")
    spread = spread_over_seeds(frame)
    if not spread.empty:
        lines = ["", "", "Repeated settings: mean +- standard deviation [min, max] over their runs"]
        for row in spread.itertuples(index=False):
            values = row._asdict()
            scores = "  ".join(
                f"{score} {values[f'{score}_mean']:.3f} +- {values[f'{score}_std']:.3f}"
                f" [{values[f'{score}_min']:.3f}, {values[f'{score}_max']:.3f}]"
                for score in SPREAD_SCORES
            )
            lines.append(f"{row.setting}  {row.runs} runs  {scores}")
        text += "\n".join(lines)
    if genre_columns:
        per_genre = frame.set_index("run")[genre_columns].T.rename_axis(columns=None)
        per_genre.index = pd.Index([c[3:] for c in genre_columns], name="F1 per genre")
        text += "\n\n" + per_genre.to_string(float_format=lambda v: f"{v:.3f}", na_rep="-")
    return text + "\n"
