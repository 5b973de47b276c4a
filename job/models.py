"""The seed's two models, layer for layer, and the inference models that are exported.

cnn:  poster (64, 64, 3) float32 in [0, 1] -> genre probabilities (genres,)
lstm: token ids (100,) int -> genre probabilities (genres,); exported with the
      vectorizer in front so the saved model takes raw overview strings.
"""

from __future__ import annotations

import keras
from keras import layers

from job.config import TrainConfig

MODELS = ("cnn", "lstm")


def build_cnn(
    num_genres: int, image_size: int = 64, dropout: float = 0.2, dense_dropout: float = 0.5
) -> keras.Model:
    """The seed's poster CNN: 3,464,601 parameters with 25 genres."""
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


def build_lstm(
    num_genres: int,
    vocabulary_size: int,
    sequence_length: int = 100,
    recurrent_dropout: float = 0.2,
    dense_dropout: float = 0.8,
) -> keras.Model:
    """The seed's overview model: Embedding 256 -> BiLSTM 256 -> BiLSTM 128 -> Dense 128."""
    tokens = keras.Input((sequence_length,), dtype="int64", name="Tokens")
    x = layers.Embedding(vocabulary_size, 256, mask_zero=True, name="Embedding")(tokens)
    x = layers.Bidirectional(
        layers.LSTM(256, dropout=0.5, recurrent_dropout=recurrent_dropout, return_sequences=True),
        name="BiLSTM1",
    )(x)  # (100, 512)
    x = layers.Bidirectional(
        layers.LSTM(128, dropout=0.5, recurrent_dropout=recurrent_dropout), name="BiLSTM2"
    )(x)  # (256,)
    x = layers.Dense(128, activation="relu", name="Dense")(x)
    x = layers.Dropout(dense_dropout, name="Drop")(x)
    genres = layers.Dense(num_genres, activation="sigmoid", dtype="float32", name="Output")(x)
    return keras.Model(tokens, genres, name="lstm")


def compile_model(
    model: keras.Model, learning_rate: float, jit_compile: bool | str = "auto"
) -> None:
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="binary_crossentropy",
        metrics=[keras.metrics.Precision(name="precision"), keras.metrics.Recall(name="recall")],
        jit_compile=jit_compile,
    )


def inference_model(
    trained: keras.Model, vectorizer: layers.TextVectorization | None
) -> keras.Model:
    """The model to export: raw inputs in, probabilities out (the vectorizer in front for lstm)."""
    if vectorizer is None:
        return trained
    overview = keras.Input((1,), dtype="string", name="Overview")
    return keras.Model(overview, trained(vectorizer(overview)), name=f"{trained.name}_inference")


def build_for(
    config: TrainConfig, num_genres: int, vectorizer: layers.TextVectorization | None
) -> keras.Model:
    """The model a run's config describes (cnn or lstm)."""
    if config.model == "cnn":
        return build_cnn(num_genres, config.image_size)
    return build_lstm(
        num_genres, vectorizer.vocabulary_size(), config.sequence_length, config.recurrent_dropout
    )
