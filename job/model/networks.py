"""The course notebook's two models, layer for layer, their fusion, the exported models.

cnn:    poster (64, 64, 3) float32 in [0, 1] -> genre probabilities (genres,)
lstm:   token ids (100,) int -> genre probabilities (genres,); exported with the
        vectorizer in front so the saved model takes raw overview strings.
fusion: {"Poster", "Tokens"} -> the CNN's 1024 features and the LSTM's 128, joined,
        -> genre probabilities; exported as {"Poster", "Overview"}.
With text_features "tfidf" (the tuned recipe), lstm and fusion also take "Ngrams": an
overview's TF-IDF over words and word pairs (NGRAM_TOKENS,), through a dense layer joined
beside the LSTM's features; exported with that vectorizer in front too.
With colour_features "histogram" (or "statistics"), cnn and fusion also join the poster's
joint RGB histogram (and more statistics: poster_features.py) before the output layer.
With tfidf_logistic or colour_logistic (the tuned lstm and fusion), a "Prior" input of
logits, a logistic regression's (logistic.py), is added to the output layer's (with_prior);
exported with the regression in front of it.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from job.config import TrainConfig
from job.model.poster_features import POSTER_FEATURES

NGRAM_TOKENS = 20_000  # words and word pairs of the TF-IDF branch
NGRAM_UNITS = 256  # its dense layer
NGRAM_DROPOUT = 0.5  # on its TF-IDF input and on its dense layer's output


def build_cnn(
    num_genres: int, image_size: int = 64, dropout: float = 0.2, dense_dropout: float = 0.5
) -> keras.Model:
    """The notebook's poster CNN: 3,464,601 parameters with 25 genres."""
    conv = {"kernel_size": 3, "padding": "same", "activation": "relu"}
    poster = keras.Input((image_size, image_size, 3), name="Poster")
    x = layers.Conv2D(16, strides=2, name="Conv0", **conv)(poster)  # (32, 32, 16)
    x = layers.Dropout(dropout, name="Drop1")(x)
    x = layers.Conv2D(32, name="Conv1", **conv)(x)
    x = layers.Conv2D(32, name="Conv2", **conv)(x)
    x = layers.Dropout(dropout, name="Drop2")(x)
    x = layers.MaxPooling2D(2, name="Pool1")(x)  # (16, 16, 32)
    x = layers.Conv2D(64, name="Conv3", **conv)(x)
    x = layers.Conv2D(64, name="Conv4", **conv)(x)
    x = layers.Dropout(dropout, name="Drop3")(x)
    x = layers.MaxPooling2D(2, name="Pool2")(x)  # (8, 8, 64)
    x = layers.Conv2D(128, name="Conv5", **conv)(x)
    x = layers.Conv2D(128, name="Conv6", **conv)(x)
    x = layers.Dropout(dropout, name="Drop4")(x)
    x = layers.MaxPooling2D(2, name="Pool3")(x)  # (4, 4, 128)
    x = layers.Flatten(name="Flat")(x)  # (2048,)
    x = layers.Dense(1024, activation="relu", name="FC1")(x)
    x = layers.Dropout(dense_dropout, name="Drop5")(x)
    x = layers.Dense(1024, activation="relu", name="FC2")(x)
    x = layers.Dropout(dense_dropout, name="Drop6")(x)
    # float32 output even under mixed precision: the loss and thresholds need it.
    genres = layers.Dense(num_genres, activation="sigmoid", dtype="float32", name="Output")(x)
    return keras.Model(poster, genres, name="cnn")


def with_colours(cnn: keras.Model, kind: str = "histogram") -> keras.Model:
    """The cnn with its poster's features of `kind` (POSTER_FEATURES; standardised by
    batch normalisation) joined to its last hidden layer before a new output layer."""
    poster = cnn.input
    colours = POSTER_FEATURES[kind](name="Colours")(poster)
    colours = layers.BatchNormalization(dtype="float32", name="ColoursNorm")(colours)
    joined = layers.Concatenate(name="PosterJoined")([cnn.get_layer("Drop6").output, colours])
    genres = layers.Dense(
        cnn.output.shape[-1], activation="sigmoid", dtype="float32", name="Output"
    )
    return keras.Model(poster, genres(joined), name="cnn")


def build_lstm(
    num_genres: int,
    vocabulary_size: int,
    sequence_length: int = 100,
    recurrent_dropout: float = 0.2,
    dense_dropout: float = 0.8,
    dropout: float = 0.5,
) -> keras.Model:
    """The notebook's overview model: Embedding 256 -> BiLSTM 256 -> BiLSTM 128 -> Dense 128."""
    tokens = keras.Input((sequence_length,), dtype="int64", name="Tokens")
    x = layers.Embedding(vocabulary_size, 256, mask_zero=True, name="Embedding")(tokens)
    x = layers.Bidirectional(
        layers.LSTM(
            256, dropout=dropout, recurrent_dropout=recurrent_dropout, return_sequences=True
        ),
        name="BiLSTM1",
    )(x)  # (100, 512)
    x = layers.Bidirectional(
        layers.LSTM(128, dropout=dropout, recurrent_dropout=recurrent_dropout), name="BiLSTM2"
    )(x)  # (256,)
    x = layers.Dense(128, activation="relu", name="Dense")(x)
    x = layers.Dropout(dense_dropout, name="Drop")(x)
    genres = layers.Dense(num_genres, activation="sigmoid", dtype="float32", name="Output")(x)
    return keras.Model(tokens, genres, name="lstm")


def ngram_branch(ngram_tokens: int) -> keras.Model:
    """TF-IDF of an overview's words and word pairs -> NGRAM_UNITS features."""
    ngrams = keras.Input((ngram_tokens,), name="Ngrams")
    x = layers.Dropout(NGRAM_DROPOUT, name="NgramDrop1")(ngrams)
    x = layers.Dense(NGRAM_UNITS, activation="relu", name="NgramDense")(x)
    x = layers.Dropout(NGRAM_DROPOUT, name="NgramDrop2")(x)
    return keras.Model(ngrams, x, name="ngrams")


def build_fusion(
    cnn: keras.Model | None,
    lstm: keras.Model,
    num_genres: int,
    ngrams: keras.Model | None = None,
    name: str = "fusion",
) -> keras.Model:
    """The notebook models up to their last hidden layer (and the n-gram branch), joined
    before one output layer. Without `cnn`: the lstm with the n-gram branch beside it."""
    branches = [(keras.Model(lstm.input, lstm.get_layer("Drop").output, name="overview"), "Tokens")]
    if cnn is not None:
        last = "PosterJoined" if "Colours" in [layer.name for layer in cnn.layers] else "Drop6"
        poster_features = keras.Model(cnn.input, cnn.get_layer(last).output, name="poster")
        branches.insert(0, (poster_features, "Poster"))
    if ngrams is not None:
        branches.append((ngrams, "Ngrams"))
    inputs = {
        key: keras.Input(branch.input.shape[1:], dtype=branch.input.dtype, name=key)
        for branch, key in branches
    }
    features = [branch(inputs[key]) for branch, key in branches]
    joined = layers.Concatenate(name="Joined")(features)  # (1024 + 128 [+ NGRAM_UNITS],)
    genres = layers.Dense(num_genres, activation="sigmoid", dtype="float32", name="Output")
    return keras.Model(inputs, genres(joined), name=name)


def with_prior(model: keras.Model) -> keras.Model:
    """`model` with a "Prior" input of logits (genres,), a logistic regression's
    (logistic.py), added to its output layer's before the sigmoid. Takes a dict of inputs."""
    features = model.get_layer("Output").input
    num_genres = model.output.shape[-1]
    inputs = dict(model.input) if isinstance(model.input, dict) else {"Poster": model.input}
    inputs["Prior"] = keras.Input((num_genres,), name="Prior")
    # Zeros: the model starts as the regression and moves only where the loss says.
    logits = layers.Dense(
        num_genres, kernel_initializer="zeros", dtype="float32", name="OutputLogits"
    )(features)
    summed = layers.Add(dtype="float32", name="Logits")([logits, inputs["Prior"]])
    genres = layers.Activation("sigmoid", dtype="float32", name="Output")(summed)
    return keras.Model(inputs, genres, name=model.name)


def poster_input(model: keras.Model, flip: bool, seed: int) -> keras.Model:
    """The model a run trains: `model` behind a uint8 poster input.

    Posters arrive as the cache holds them, uint8 (pipeline.make_dataset(uint8_posters=
    True)), and become float32 in [0, 1] here, then, while training and with `flip`, are
    mirrored left-right at random (seeded: the same run gives the same model). These run
    where the model runs, a GPU's work instead of the host's: on the host they were 3/4
    of an epoch over the cache. Shares its layers with `model`, which is what is exported
    (float posters in [0, 1]). The lstm takes no posters: returned as it is.
    """
    if model.name == "lstm":
        return model
    joined = isinstance(model.input, dict)  # the fusion, a cnn with a prior
    poster_shape = (model.input["Poster"] if joined else model.input).shape[1:]
    poster = keras.Input(poster_shape, dtype="uint8", name="Poster")
    # float32 whatever the precision policy: the model's first layer casts, as before.
    x = layers.Rescaling(1 / 255, dtype="float32", name="ToFloat")(poster)  # (64, 64, 3)
    if flip:
        x = layers.RandomFlip("horizontal", seed=seed, dtype="float32", name="Flip")(x)
    if not joined:
        return keras.Model(poster, model(x), name=f"{model.name}_training")
    texts = {
        key: keras.Input(tensor.shape[1:], dtype=tensor.dtype, name=key)
        for key, tensor in model.input.items()
        if key != "Poster"
    }
    genres = model({"Poster": x, **texts})
    return keras.Model({"Poster": poster, **texts}, genres, name=f"{model.name}_training")


def positive_weights(labels: np.ndarray, class_weight: str) -> np.ndarray | None:
    """Per-genre weight of a positive label: (negatives / positives) ** p, p = 1 for
    "balanced", 0.5 for "sqrt"; at most 20 so a genre seen once cannot swamp the loss."""
    if class_weight == "none":
        return None
    power = {"balanced": 1.0, "sqrt": 0.5}[class_weight]
    positives = labels.sum(axis=0)
    ratio = (len(labels) - positives) / np.maximum(positives, 1)
    return np.clip(ratio**power, 1.0, 20.0).astype(np.float32)


def make_loss(weights: np.ndarray | None, reduction: str | None = "sum_over_batch_size"):
    """Binary cross-entropy; with `weights`, positive labels of genre g count weights[g]."""
    if weights is None:
        return keras.losses.BinaryCrossentropy(reduction=reduction)
    return WeightedBinaryCrossentropy(weights.tolist(), reduction=reduction)


class WeightedBinaryCrossentropy(keras.losses.Loss):
    def __init__(self, weights: list[float], reduction="sum_over_batch_size", name="weighted_bce"):
        super().__init__(reduction=reduction, name=name)
        self.weights = weights

    def call(self, y_true, y_pred):  # (batch, genres) each -> (batch,)
        y_true = tf.cast(y_true, y_pred.dtype)
        p = tf.clip_by_value(y_pred, keras.config.epsilon(), 1 - keras.config.epsilon())
        w = tf.constant(self.weights, y_pred.dtype)
        losses = -(w * y_true * tf.math.log(p) + (1 - y_true) * tf.math.log(1 - p))
        return tf.reduce_mean(losses, axis=-1)

    def get_config(self) -> dict:
        return {**super().get_config(), "weights": self.weights}


def compile_model(
    model: keras.Model,
    learning_rate: float,
    jit_compile: bool | str = "auto",
    loss_weights: np.ndarray | None = None,
) -> None:
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=make_loss(loss_weights),
        metrics=[keras.metrics.Precision(name="precision"), keras.metrics.Recall(name="recall")],
        jit_compile=jit_compile,
    )


def inference_model(trained: keras.Model, vectorizers: dict | None) -> keras.Model:
    """The model to export: raw inputs in ("Poster" float posters in [0, 1], "Overview"
    strings; one of them alone as it is), probabilities out. The vectorizers, by the model
    input each feeds, go in front of the overview branches; a "Prior" model, the logistic
    regression, in front of the prior input, fed what it reads of those."""
    if vectorizers is None:
        return trained
    raw, fed = {}, {}
    if isinstance(trained.input, dict) and "Poster" in trained.input:
        raw["Poster"] = fed["Poster"] = keras.Input(
            trained.input["Poster"].shape[1:], name="Poster"
        )
    texts = {key: vectorizer for key, vectorizer in vectorizers.items() if key != "Prior"}
    if texts:
        raw["Overview"] = keras.Input((1,), dtype="string", name="Overview")
        fed.update({key: vectorized(v, raw["Overview"]) for key, v in texts.items()})
    if "Prior" in vectorizers:
        prior = vectorizers["Prior"]
        fed["Prior"] = prior({key: fed[key] for key in prior.input})
    genres = trained(fed if isinstance(trained.input, dict) else fed["Tokens"])
    exported = raw if len(raw) > 1 else next(iter(raw.values()))
    return keras.Model(exported, genres, name=f"{trained.name}_inference")


def vectorized(vectorizer: layers.TextVectorization, overview: keras.KerasTensor):
    """`vectorizer` applied to the (films, 1) string input, one row a film: a TF-IDF
    vectorizer's symbolic output keeps the input's axis of 1, which its values lack."""
    x = vectorizer(overview)
    return layers.Reshape(x.shape[-1:], name=f"{vectorizer.name}Rows")(x) if x.ndim == 3 else x


def overview_embedding(model: keras.Model) -> layers.Embedding:
    """The Embedding of an lstm model, or of a joined model's overview branch."""
    joined = any(layer.name == "overview" for layer in model.layers)
    branch = model.get_layer("overview") if joined else model
    return branch.get_layer("Embedding")


def build_for(config: TrainConfig, num_genres: int, vectorizers: dict | None) -> keras.Model:
    """The model a run's config describes, with the run's dropout rates."""
    cnn = None
    if config.model != "lstm":
        cnn = build_cnn(num_genres, config.image_size, config.cnn_dropout, config.cnn_dense_dropout)
        if config.colour_features != "none":
            cnn = with_colours(cnn, config.colour_features)
        if config.model == "cnn":
            return with_prior(cnn) if config.colour_logistic else cnn
    lstm = build_lstm(
        num_genres,
        vectorizers["Tokens"].vocabulary_size(),
        config.sequence_length,
        config.recurrent_dropout,
        config.lstm_dense_dropout,
        config.lstm_dropout,
    )
    ngrams = None
    if "Ngrams" in vectorizers:
        ngrams = ngram_branch(vectorizers["Ngrams"].vocabulary_size())
    elif config.model == "lstm":
        return lstm
    model = build_fusion(cnn, lstm, num_genres, ngrams, name=config.model)
    prior = (ngrams is not None and config.tfidf_logistic) or (
        cnn is not None and config.colour_logistic
    )
    return with_prior(model) if prior else model
