"""The shared checker of a finished run: every promised output exists and parses, and its
values agree with an independent source (the CSV itself, the split rule written out here,
scikit-learn's scores), not with the job's own figures."""

from __future__ import annotations

import hashlib
import io
import json

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, f1_score

from job import storage

RUN_FILES = [
    "config.json",
    "history.csv",
    "model.keras",
    "saved_model/saved_model.pb",
    "saved_model/variables/variables.index",
    "thresholds.json",
    "metrics.json",
    "predictions.csv",
    "_SUCCESS",
    "checkpoints/best.weights.h5",
    "checkpoints/last.weights.h5",
    "backup/latest.weights.h5",
    "backup/training_metadata.json",
]


def read_csv(url: str) -> pd.DataFrame:
    return pd.read_csv(
        io.BytesIO(storage.read_bytes(url)), keep_default_na=False, dtype={"Id": str}
    )


def split_by_hash(film_id: str, seed: int, validation: float, evaluation: float) -> str:
    """The README's split rule: the first 8 bytes of sha256("seed:Id") as a fraction of 2**64."""
    digest = hashlib.sha256(f"{seed}:{film_id}".encode()).digest()
    fraction = int.from_bytes(digest[:8], "big") / 2**64
    if fraction >= 1 - evaluation:
        return "evaluation"
    return "validation" if fraction >= 1 - validation - evaluation else "train"


def catalogue_truth(config: dict, data: str | None = None) -> pd.DataFrame:
    """The run's CSV as pandas reads it: Id, true_genres (in the run's genre order), split.
    `data`: where this process sees the run's --data (a container's path differs)."""
    csv = read_csv(storage.join(data or config["data"], config["csv"]))
    genres = config["run"]["genres"]
    ids = csv["Id"].str.strip()
    return pd.DataFrame(
        {
            "Id": ids,
            "true_genres": [
                "|".join(g for g in genres if str(row[g]).strip() == "1")
                for _, row in csv.iterrows()
            ],
            "split": [
                split_by_hash(
                    # (runs from before --split-seed split by their --seed)
                    i,
                    config.get("split_seed", config["seed"]),
                    config["validation_fraction"],
                    config["evaluation_fraction"],
                )
                for i in ids
            ],
        }
    )


def genre_matrix(column: pd.Series, genres: list[str]) -> np.ndarray:
    """'A|B' strings as a (films, genres) 0/1 matrix."""
    sets = [set(value.split("|")) if value else set() for value in column]
    return np.array([[g in s for g in genres] for s in sets], dtype=int).reshape(-1, len(genres))


def check_scores(
    scores: dict, y_true: np.ndarray, y_pred: np.ndarray, probs: np.ndarray, genres: list[str]
) -> None:
    """metrics.json's figures against scikit-learn's on the same films."""
    has_positives = y_true.sum(0) > 0
    expected = {
        "films": len(y_true),
        "micro_f1": f1_score(y_true, y_pred, average="micro", zero_division=0),
        "macro_f1": f1_score(
            y_true[:, has_positives], y_pred[:, has_positives], average="macro", zero_division=0
        ),
        "samples_f1": f1_score(y_true, y_pred, average="samples", zero_division=0),
    }
    for key, value in expected.items():
        assert abs(scores[key] - value) <= 1e-9, (key, scores[key], value)
    per_genre = [scores["per_genre"][genre] for genre in genres]
    for g, figures in enumerate(per_genre):
        assert figures["support"] == y_true[:, g].sum()
        if not has_positives[g]:
            assert figures["average_precision"] is None
        else:
            ap = average_precision_score(y_true[:, g], probs[:, g])
            assert abs(figures["average_precision"] - ap) <= 1e-9, (g, figures, ap)
    aps = [f["average_precision"] for f in per_genre if f["average_precision"] is not None]
    assert abs(scores["mAP"] - np.mean(aps)) <= 1e-9


def check_values(output: str, config: dict, data: str | None = None) -> None:
    genres = config["run"]["genres"]
    predictions = read_csv(storage.join(output, "predictions.csv"))
    thresholds = json.loads(storage.read_bytes(storage.join(output, "thresholds.json")))
    # The model's float32 probabilities, exactly as the job compared them.
    probs = predictions[[f"prob_{g}" for g in genres]].to_numpy().astype(np.float32)
    # predicted_genres: exactly the genres at or above their own threshold
    limits = np.array([thresholds[g] for g in genres])
    predicted = genre_matrix(predictions["predicted_genres"], genres).astype(bool)
    assert (predicted == (probs >= limits)).all()
    for value in predictions["predicted_genres"]:  # known genres, once each, in run order
        names = value.split("|") if value else []
        assert names == [g for g in genres if g in names], value
    # The evaluation films are the CSV's films the split rule puts there, in CSV order,
    # with their genres as the CSV has them.
    truth = catalogue_truth(config, data)
    evaluation = truth[truth["split"] == "evaluation"]
    if not any(config["run"]["films_dropped"].values()):
        assert predictions["Id"].tolist() == evaluation["Id"].tolist()
    else:
        assert set(predictions["Id"]) <= set(evaluation["Id"])
    true_genres = evaluation.set_index("Id").loc[predictions["Id"], "true_genres"]
    assert predictions["true_genres"].tolist() == true_genres.tolist()
    # metrics.json agrees with predictions.csv.
    metrics = json.loads(storage.read_bytes(storage.join(output, "metrics.json")))
    y_true = genre_matrix(predictions["true_genres"], genres)
    assert metrics["evaluation_films"] == len(predictions)
    check_scores(
        metrics["tuned_thresholds"],
        y_true,
        genre_matrix(predictions["predicted_genres"], genres),
        probs,
        genres,
    )
    check_scores(metrics["threshold_0.5"], y_true, (probs >= 0.5).astype(int), probs, genres)


def check_run(output: str, model: str, epochs: int, data: str | None = None) -> dict:
    """Every promised output exists under `output`, parses, and holds the right values;
    returns config.json. `data`: the run's --data as this process reaches it, if not as
    config.json names it."""
    files = storage.list_files(output)
    missing = [f for f in RUN_FILES if f not in files]
    assert not missing, f"missing outputs: {missing}"
    for side in ("train", "validation"):
        assert any(f.startswith(f"tensorboard/{side}/events.out.tfevents") for f in files)
    config = json.loads(storage.read_bytes(storage.join(output, "config.json")))
    assert config["model"] == model
    assert set(config["run"]["versions"]) >= {"tensorflow", "keras", "genre_job"}
    genres = config["run"]["genres"]
    history = read_csv(storage.join(output, "history.csv"))
    assert history["epoch"].tolist() == list(range(1, epochs + 1))  # as the log numbers them
    assert {"loss", "val_loss", "precision", "recall", "learning_rate"} <= set(history.columns)
    predictions = read_csv(storage.join(output, "predictions.csv"))
    assert len(predictions) == config["run"]["split_sizes"]["evaluation"]
    assert predictions.columns.tolist() == [
        "Id",
        "predicted_genres",
        "true_genres",
        *[f"prob_{g}" for g in genres],
    ]
    probs = predictions[[f"prob_{g}" for g in genres]].to_numpy()
    assert ((probs >= 0) & (probs <= 1)).all()
    metrics = json.loads(storage.read_bytes(storage.join(output, "metrics.json")))
    for key in ("tuned_thresholds", "threshold_0.5"):
        assert {"micro_f1", "macro_f1", "samples_f1", "mAP", "per_genre"} <= set(metrics[key])
        assert set(metrics[key]["per_genre"]) == set(genres)
    thresholds = json.loads(storage.read_bytes(storage.join(output, "thresholds.json")))
    assert list(thresholds) == genres
    check_values(output, config, data)
    return config


def validation_loss(output: str, predicted: str) -> float:
    """Binary cross-entropy of the exported model's probabilities (`predict`'s CSV of every
    film) on the validation films (split by the README's rule, labels from the CSV), as
    Keras averages it."""
    config = json.loads(storage.read_bytes(storage.join(output, "config.json")))
    truth = catalogue_truth(config).set_index("Id")
    validation = truth.index[truth["split"] == "validation"]
    genres = config["run"]["genres"]
    frame = read_csv(predicted).set_index("Id").loc[validation]
    y = genre_matrix(truth.loc[validation, "true_genres"], genres)
    p = np.clip(frame[[f"prob_{g}" for g in genres]].to_numpy(), 1e-7, 1 - 1e-7)
    return float(np.mean(-(y * np.log(p) + (1 - y) * np.log(1 - p))))


def assert_exports_the_best_epoch(output: str, predicted: str) -> None:
    """The exported model is the epoch with the lowest val_loss in history.csv, not the last."""
    losses = read_csv(storage.join(output, "history.csv"))["val_loss"].to_numpy()
    # (runs are set so that the last epoch is not the best: else this shows nothing)
    assert losses[-1] - losses.min() > 1e-3, losses
    loss = validation_loss(output, predicted)
    assert abs(loss - losses.min()) < 2e-4, (loss, losses)


def assert_export_reproduces_run(output: str, predicted: str, films: int) -> None:
    """`predict` over all films with the exported model (raw inputs, vectorizer inside for
    lstm and fusion) gives the run's own evaluation probabilities and genres."""
    everything = read_csv(predicted)
    assert len(everything) == films
    evaluation = read_csv(f"{output}/predictions.csv")
    same = everything.set_index("Id").loc[evaluation["Id"]].reset_index()
    prob_columns = [c for c in evaluation.columns if c.startswith("prob_")]
    np.testing.assert_allclose(same[prob_columns], evaluation[prob_columns], atol=1e-5)
    assert same["predicted_genres"].tolist() == evaluation["predicted_genres"].tolist()
