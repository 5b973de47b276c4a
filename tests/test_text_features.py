"""The tuned recipe's TF-IDF n-gram branch (text_features) and the split seed: built only
where the recipe says, adapted on training films only, exported with its vectorizer in
front, and runs from before either setting load and resume as they trained."""

from __future__ import annotations

import json
import shutil

import keras
import numpy as np
import pandas as pd
import pytest
from conftest import LSTM_FAST

from job.config import CSV_NAME, TrainConfig
from job.data import catalogue, pipeline
from job.model.networks import build_for, build_lstm
from job.train.run import load_films
from job.train.runfolder import check_output


def vectorizers(ngrams: bool) -> dict:
    tokens = keras.layers.TextVectorization(vocabulary=["a", "b", "c"])
    if not ngrams:
        return {"Tokens": tokens}
    tfidf = keras.layers.TextVectorization(
        vocabulary=["a", "b", "a b"], idf_weights=[1.0, 1.5, 2.0], output_mode="tf_idf"
    )
    return {"Tokens": tokens, "Ngrams": tfidf}


@pytest.mark.parametrize("model", ["lstm", "fusion"])
def test_tuned_models_have_the_ngram_branch_and_notebook_ones_do_not(model):
    tuned = TrainConfig(model=model, data="d", output="o")
    notebook = TrainConfig(model=model, data="d", output="o", recipe="notebook")
    assert (tuned.text_features, notebook.text_features) == ("tfidf", "none")

    built = build_for(tuned, 25, vectorizers(ngrams=True))

    # (and the tuned logistic regression's logits: tests/test_logistic_prior.py)
    poster = {"Poster"} if model == "fusion" else set()
    assert set(built.input) == {"Tokens", "Ngrams", "Prior"} | poster
    branch = built.get_layer("ngrams")
    assert branch.input.shape[1:] == (4,)  # the n-gram vocabulary with its OOV slot
    joined = built.get_layer("Joined").output.shape[-1]
    # BiLSTM 128, the n-gram branch, and fusion's poster side: the CNN's 1024 and the 8x8x8
    # colour histogram (tuned joins it too).
    assert joined == 128 + branch.output.shape[-1] + (1024 + 512 if model == "fusion" else 0)

    plain = build_for(notebook, 25, vectorizers(ngrams=False))
    assert "ngrams" not in [layer.name for layer in plain.layers]
    if model == "lstm":  # the notebook's model itself, parameter for parameter
        assert plain.count_params() == build_lstm(25, 5, 100).count_params()  # 3 words, pad, OOV


def with_marked_overviews(demo_dir, tmp_path) -> tuple[str, str, str]:
    """The demo data with one word only a training overview has and one only an
    evaluation overview has; returns (data folder, training word, evaluation word)."""
    data = tmp_path / "data"
    shutil.copytree(demo_dir, data)
    frame = pd.read_csv(data / CSV_NAME, dtype={"Id": str}, keep_default_na=False)
    split = TrainConfig(model="lstm", data=str(data), output="o").split_of(frame["Id"].tolist())
    train_row, evaluation_row = (
        np.flatnonzero(split == "train")[0],
        np.flatnonzero(split == "evaluation")[0],
    )
    frame.loc[train_row, "Overview"] += " quokkatrain"
    frame.loc[evaluation_row, "Overview"] += " quokkaevaluation"
    frame.to_csv(data / CSV_NAME, index=False)
    return str(data), "quokkatrain", "quokkaevaluation"


def test_ngram_vectorizer_is_adapted_on_training_films_only(demo_dir, tmp_path):
    data, train_word, evaluation_word = with_marked_overviews(demo_dir, tmp_path)
    config = TrainConfig(model="lstm", data=data, output="o", max_tokens=2000)

    films, inputs, vectorizers, split = load_films(config)

    vocabulary = vectorizers["Ngrams"].get_vocabulary()
    assert train_word in vocabulary and evaluation_word not in vocabulary
    # Document frequencies too: the same weights as a vectorizer adapted on training texts.
    train_texts = [o for o, s in zip(films.overviews, split, strict=True) if s == "train"]
    expected = pipeline.make_ngram_vectorizer(train_texts, len(vocabulary), config.stop_words)
    assert expected.get_vocabulary() == vocabulary
    everything = np.array(films.overviews)
    np.testing.assert_allclose(
        vectorizers["Ngrams"](everything).numpy(), expected(everything).numpy(), rtol=1e-6
    )
    # Batches carry each film's own TF-IDF row.
    rows = pipeline.take(inputs, split == "evaluation")
    dataset = pipeline.make_dataset(rows, films.labels[split == "evaluation"], 8, False, 0)
    first = next(iter(dataset))[0]["Ngrams"].numpy()
    texts = np.array(films.overviews)[split == "evaluation"][:8]
    np.testing.assert_allclose(first, expected(texts).numpy(), rtol=1e-6)


def read_probabilities(path) -> pd.DataFrame:
    frame = pd.read_csv(path, dtype={"Id": str}, keep_default_na=False).set_index("Id")
    return frame[[c for c in frame.columns if c.startswith("prob_")]]


def test_exported_fusion_predicts_what_the_two_replica_run_scored(demo_dir, tmp_path, cli):
    """The tuned fusion (TF-IDF branch, stop words dropped) with the poster's colour branch
    too (tests/test_colour_features.py), trained on 2 replicas, exported, predicted."""
    run, predicted = tmp_path / "run", tmp_path / "predicted.csv"
    # 2 replicas x 4: the first validation batch splits evenly between the replicas.
    result = cli(
        "train", "--model", "fusion", "--data", demo_dir, "--output", run, "--epochs", 1,
        "--cpu-replicas", 2, "--batch-size", 4, "--colour-features", "histogram", *LSTM_FAST,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    config = json.loads((run / "config.json").read_text())
    assert (config["text_features"], config["stop_words"]) == ("tfidf", True)
    assert (config["colour_features"], config["run"]["replicas"]) == ("histogram", 2)

    # predict feeds model.keras raw overview strings and posters
    result = cli("predict", "--model-dir", run, "--data", demo_dir, "--output", predicted)

    assert result.exit_code == 0, result.output
    scored = read_probabilities(run / "predictions.csv")
    served = read_probabilities(predicted).loc[scored.index]
    np.testing.assert_allclose(served.to_numpy(), scored.to_numpy(), atol=1e-5)


def old_config(seed: int) -> dict:
    """A tuned fusion run's config.json as written before text_features, split_seed,
    stop_words, colour_features, tfidf_logistic and colour_logistic."""
    config = json.loads(TrainConfig(model="fusion", data="d", output="o", seed=seed).to_json())
    for name in (
        "text_features",
        "split_seed",
        "stop_words",
        "colour_features",
        "tfidf_logistic",
        "colour_logistic",
    ):
        del config[name]
    return config


def test_a_run_from_before_the_settings_loads_and_resumes_as_it_trained(tmp_path):
    loaded = TrainConfig.from_json(json.dumps(old_config(seed=7)))

    assert (loaded.text_features, loaded.split_seed, loaded.seed) == ("none", 7, 7)
    assert (
        loaded.stop_words,
        loaded.colour_features,
        loaded.tfidf_logistic,
        loaded.colour_logistic,
    ) == (False, "none", False, False)
    built = build_for(loaded, 25, vectorizers(ngrams=False))
    names = [layer.name for layer in [*built.layers, *built.get_layer("poster").layers]]
    assert "ngrams" not in names and "Colours" not in names

    # Resumed by the command that started it (no new flags): the run goes on as it began.
    unfinished = tmp_path / "run"
    unfinished.mkdir()
    (unfinished / "config.json").write_text(json.dumps(old_config(seed=7)))
    resumed = TrainConfig(model="fusion", data="d", output=str(unfinished), seed=7)
    assert (resumed.text_features, resumed.split_seed, resumed.stop_words) == ("tfidf", 42, True)
    check_output(resumed)
    assert (resumed.text_features, resumed.split_seed, resumed.stop_words) == ("none", 7, False)
    assert resumed.colour_features == "none"


def test_the_split_follows_the_split_seed_not_the_seed():
    ids = [f"tt{n:07d}" for n in range(2000)]

    def split(**seeds: int) -> np.ndarray:
        return TrainConfig(model="cnn", data="d", output="o", **seeds).split_of(ids)

    # The default split is the one every run had before --split-seed: --seed's default 42.
    np.testing.assert_array_equal(split(), catalogue.split_of(ids, 42, 0.1, 0.1))
    np.testing.assert_array_equal(split(seed=1), split(seed=2))
    assert (split(seed=1) != split(seed=1, split_seed=3)).any()


def test_stop_words_are_dropped_before_words_and_pairs_are_counted():
    overviews = ["The man of the house and his anthem.", "A man of THE house burns"]

    vocabulary = pipeline.make_ngram_vectorizer(overviews, 100, stop_words=True).get_vocabulary()
    kept = pipeline.make_ngram_vectorizer(overviews, 100).get_vocabulary()

    # Pairs are of the words left, as scikit-learn's TfidfVectorizer(stop_words=...) counts.
    words = {"man", "house", "anthem", "burns", "man house", "house anthem", "house burns"}
    assert set(vocabulary) == {"[UNK]", *words}
    assert {"the", "man of"} <= set(kept)
