"""A training run, top to bottom: films -> inputs -> replicated model -> fit -> outputs.

Everything the run writes goes to a local staging folder first and is mirrored to
`--output` through fsspec (TensorFlow's gs:// cannot be pointed at a test server).
A rerun of the same command downloads that state and resumes after the last finished epoch.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import shutil
import sys
import tempfile
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from job import __version__, storage
from job.config import TrainConfig
from job.data import catalogue, pipeline, poster_decoding, prepared
from job.data.cache import cache_posters, choose_cache
from job.errors import InputError, OutputError, TrainingInterrupted, refused_writes
from job.model import logistic, networks
from job.model.embeddings import lsa_vectors
from job.model.networks import NGRAM_TOKENS
from job.storage import lock
from job.train import multiworker
from job.train.callbacks import (
    EpochLog,
    History,
    StopOnSignal,
    SyncToBucket,
    best_val_loss,
    learning_rate_schedule,
)
from job.train.finish import clear_output, finish_run
from job.train.runfolder import check_output
from job.train.strategy import make_strategy, precision_policy

log = logging.getLogger(__name__)


def load_films(
    config: TrainConfig,
) -> tuple[catalogue.Catalogue, pipeline.Inputs, object, np.ndarray]:
    """The films with usable input for this model, their inputs, (lstm, fusion) the
    vectorizers by the model input they feed, and their split (catalogue.split_of).

    `--data` is a dataset root (CSV + Images/) or a `genre-job prepare` output (TFRecord
    shards with posters already decoded): the same films and inputs either way.
    """
    posters = None
    if prepared.is_prepared(config.data):
        # (the manifest says how its posters were decoded: predict decodes the same way)
        films, posters, config.poster_decoding = prepared.read_prepared(
            config.data, config.image_size
        )
        if config.model != "lstm":  # the lstm reads no posters: nothing to cache
            cache = choose_cache(config.cache, len(films), config.image_size)
            posters = cache_posters(posters, cache, config.cache_dir)
    else:
        films = catalogue.read_catalogue(storage.join(config.data, config.csv))
        if config.model != "lstm":
            images = storage.join(config.data, config.images)
            cache = choose_cache(config.cache, len(films), config.image_size)
            films, posters = poster_decoding.read_posters(
                films, images, config.image_size, cache, config.cache_dir, config.poster_decoding
            )
            posters = cache_posters(posters, cache, config.cache_dir)  # memory: one tensor
    if config.model == "cnn":
        return films, posters, None, config.split_of(films.ids)
    has_overview = films.has_overview()
    films = films.drop(has_overview, "no overview")
    split = config.split_of(films.ids)
    train_texts = [o for o, s in zip(films.overviews, split, strict=True) if s == "train"]
    if not train_texts:
        raise InputError(f"{config.data}: no training films with an overview")
    vectorizers = {
        "Tokens": pipeline.make_vectorizer(train_texts, config.max_tokens, config.sequence_length)
    }
    # (films, sequence_length) token ids, computed once
    texts: dict = {"Tokens": pipeline.vectorize(vectorizers["Tokens"], films.overviews)}
    if config.text_features != "none":
        vectorizers["Ngrams"] = pipeline.make_ngram_vectorizer(
            train_texts, NGRAM_TOKENS, config.stop_words
        )
        texts["Ngrams"] = pipeline.NgramRows.of(vectorizers["Ngrams"], films.overviews)
    if config.model == "lstm":
        return films, texts if len(texts) > 1 else texts["Tokens"], vectorizers, split
    return films, {"Poster": posters[has_overview], **texts}, vectorizers, split


def routes(config: TrainConfig) -> dict[str, str]:
    """Staging folders that go somewhere other than --output (Vertex AI's AIP_* dirs)."""
    routed = {}
    if config.checkpoint_dir:
        routed["checkpoints"] = storage.join(config.checkpoint_dir, "checkpoints")
        routed["backup"] = storage.join(config.checkpoint_dir, "backup")
    if config.tensorboard_dir:
        routed["tensorboard"] = config.tensorboard_dir
    return routed


def restore_state(config: TrainConfig, staging: Path) -> int:
    """Download an unfinished run's state; returns the number of epochs already done."""
    routed = routes(config)
    skip = {"config.json", lock.LOCK_NAME, *routed}
    count = storage.download_tree(config.output, staging, skip=skip)
    for top, url in routed.items():
        count += storage.download_tree(url, staging / top)
    metadata = staging / "backup" / "training_metadata.json"
    done = json.loads(metadata.read_text())["epoch"] if metadata.exists() else 0
    history = staging / "history.csv"
    if history.exists():  # keep only finished epochs: the backup is what counts
        rows = list(csv.DictReader(io.StringIO(history.read_text())))
        first = 0 if rows and int(rows[0]["epoch"]) == 0 else 1  # runs before 1-based epochs
        kept = [
            {**row, "epoch": str(int(row["epoch"]) - first + 1)}
            for row in rows
            if int(row["epoch"]) - first < done
        ]
        with history.open("w", newline="") as file:
            if kept:
                writer = csv.DictWriter(file, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(kept)
    if count:
        log.info("resuming %s: %d files restored, %d epochs done", config.output, count, done)
    return done


def check_split(
    config: TrainConfig, films: catalogue.Catalogue, split: np.ndarray, global_batch: int
) -> None:
    """Refuse a run without films to train on, to validate or to evaluate."""
    for name in catalogue.SPLITS:
        if not (split == name).any():
            raise InputError(f"{config.data}: no {name} films left ({len(films)} usable films)")
    train_films = int((split == "train").sum())
    if train_films < global_batch:
        raise InputError(
            f"{config.data}: {train_films} training films, fewer than one global batch of "
            f"{global_batch}",
            "lower --batch-size",
        )


def make_datasets(
    config: TrainConfig,
    films: catalogue.Catalogue,
    inputs: pipeline.Inputs,
    split: np.ndarray,
    global_batch: int,
) -> tuple[tf.data.Dataset, ...]:
    train, validation = split == "train", split == "validation"
    return (
        pipeline.make_dataset(
            pipeline.take(inputs, train),
            films.labels[train],
            global_batch,
            True,
            config.seed,
            uint8_posters=True,  # networks.poster_input converts them
        ),
        pipeline.make_dataset(
            pipeline.take(inputs, validation),
            films.labels[validation],
            global_batch,
            False,
            config.seed,
            uint8_posters=True,
        ),
    )


def build_from_a_plain_batch(trainer: keras.Model, dataset: tf.data.Dataset) -> None:
    """Under a strategy, Keras `fit` and `evaluate` (each epoch's validation) build the
    model from the first batch of a new distributed iterator, then drop that iterator while
    its thread prefetches more: TensorFlow crashed there with a SIGSEGV now and then
    (docs/operations.md, Reliability). `trainer` builds from `dataset`'s first batch
    instead, read by a plain iterator: the validation set, unshuffled, so reading it
    changes no order."""
    batch = next(iter(dataset.take(1)))
    build = trainer._maybe_symbolic_build  # (Keras' own, given the batch)
    trainer._maybe_symbolic_build = lambda iterator=None, data_batch=None: build(
        data_batch=batch if data_batch is None else data_batch
    )


def describe_run(
    config: TrainConfig,
    films: catalogue.Catalogue,
    split: np.ndarray,
    strategy: tf.distribute.Strategy,
    global_batch: int,
) -> dict:
    """What config.json records of the run beyond the settings."""
    return {
        "genres": films.genres,
        "films_used": len(films),
        "films_dropped": films.dropped,
        "split_sizes": {name: int((split == name).sum()) for name in catalogue.SPLITS},
        # MultiWorkerMirroredStrategy's class is named CollectiveAllReduceStrategy.
        "strategy": (
            "MultiWorkerMirroredStrategy" if multiworker.cluster() else type(strategy).__name__
        ),
        "replicas": strategy.num_replicas_in_sync,
        "precision_policy": keras.mixed_precision.global_policy().name,
        "global_batch_size": global_batch,
        "versions": {
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "genre_job": __version__,
            "python": sys.version.split()[0],
        },
    }


def keras_callbacks(
    config: TrainConfig,
    staging: Path,
    mirror: storage.Mirror,
    learning_rate: float,
    stop: StopOnSignal,
) -> list:
    """Checkpoints, resume state, schedule and logs, all into `staging`; the sync last."""
    stopping = []
    if config.early_stopping:
        # The best weights are in checkpoints/best.weights.h5 either way; the run
        # exports those. (A resumed run starts its patience count afresh.)
        stopping.append(keras.callbacks.EarlyStopping("val_loss", patience=config.early_stopping))
    return [
        stop,
        keras.callbacks.BackupAndRestore(str(staging / "backup"), delete_checkpoint=False),
        keras.callbacks.LearningRateScheduler(
            learning_rate_schedule(learning_rate, config.constant_epochs, config.lr_decay)
        ),
        keras.callbacks.ModelCheckpoint(
            str(staging / "checkpoints" / "best.weights.h5"),
            monitor="val_loss",
            save_best_only=True,
            save_weights_only=True,
            initial_value_threshold=best_val_loss(staging),
        ),
        keras.callbacks.ModelCheckpoint(
            str(staging / "checkpoints" / "last.weights.h5"), save_weights_only=True
        ),
        History(str(staging / "history.csv"), append=True),
        keras.callbacks.TensorBoard(str(staging / "tensorboard"), write_graph=False),
        EpochLog(config.epochs),
        *stopping,
        SyncToBucket(mirror),  # last: uploads what the others wrote
    ]


def train(config: TrainConfig) -> dict | None:
    """Runs the whole job; returns the evaluation scores (None on a non-chief worker)."""
    multiworker.set_tf_config_from_jobset()
    chief = multiworker.is_chief()
    if not chief:
        return _train(config, chief)
    # Only the chief writes the run: it holds the lock against a second job on --output.
    check_output(config)  # before the lock: nothing is written into a folder that is not ours
    run_lock = take_lock(config)
    try:
        if config.overwrite:
            clear_output(config.output)
        scores = _train(config, chief)
    except storage.StorageError:
        # The bucket is unreachable: releasing would only wait out more retries. The
        # lease expires and the retried run takes it over.
        run_lock.abandon()
        raise
    except BaseException:
        release_quietly(run_lock)
        raise
    release_quietly(run_lock)
    return scores


def release_quietly(run_lock: lock.Lock) -> None:
    try:
        run_lock.release()
    except OSError as error:  # never hide the error that ended the run
        log.warning("could not release %s: %s", run_lock.url, error)


def take_lock(config: TrainConfig) -> lock.Lock:
    try:
        return lock.acquire(config.output, config.overwrite)
    except storage.StorageError:
        raise  # storage unreachable: exit 1, the Job retries
    except OSError as error:  # not a folder, no such bucket, forbidden
        raise OutputError(f"{config.output}: cannot write ({error})") from None


def _train(config: TrainConfig, chief: bool) -> dict | None:
    strategy = make_strategy(config.cpu_replicas)  # before any TF op: devices are fixed then
    # Set every run (also to float32): a policy outlives the run in a long-lived process.
    keras.mixed_precision.set_global_policy(precision_policy(config))
    keras.utils.set_random_seed(config.seed)

    films, inputs, vectorizers, split = load_films(config)
    global_batch = config.batch_size * strategy.num_replicas_in_sync
    check_split(config, films, split, global_batch)  # (before the regression's fits)
    prior = None
    features = logistic.features_of(
        inputs, config.model, config.tfidf_logistic, config.colour_logistic, config.colour_features
    )
    if features is not None:
        # Fitted at every start, a resumed run's too: the same films, so the same regression.
        prior = logistic.prior(features, films.labels, split, config.seed, config.image_size)
        # (a cnn's posters become one of its named inputs: it now takes the logits too)
        named = inputs if isinstance(inputs, dict) else {"Poster": inputs}
        inputs = {**named, "Prior": prior.logits}
        vectorizers = {**(vectorizers or {}), "Prior": prior.model}
    train_set, validation_set = make_datasets(config, films, inputs, split, global_batch)
    config.run = describe_run(config, films, split, strategy, global_batch)
    if prior is not None:
        config.run["logistic_c"] = prior.c
    log.info("config %s", json.dumps({k: v for k, v in vars(config).items() if k != "run"}))
    log.info(
        "films used %d, dropped %s, split %s, %s with %d replicas",
        len(films),
        films.dropped,
        config.run["split_sizes"],
        config.run["strategy"],
        strategy.num_replicas_in_sync,
    )

    staging = Path(tempfile.mkdtemp(prefix="genre-job-"))
    # Only the chief writes the run; other workers mirror to scratch (TF's multi-worker rule).
    target = config.output if chief else tempfile.mkdtemp(prefix="genre-job-worker-")
    try:
        mirror = storage.Mirror(staging, target, routes(config) if chief else None)
        done = restore_state(config, staging)
        mirror.remember_current()
        with refused_writes(config.output, OSError):
            storage.write_text(storage.join(target, "config.json"), config.to_json())
        if vectorizers is not None and "Tokens" in vectorizers:
            vocabulary = vectorizers["Tokens"].get_vocabulary()
            (staging / "vocabulary.txt").write_text("\n".join(vocabulary))
        for folder in ("checkpoints", "backup"):
            (staging / folder).mkdir(exist_ok=True)

        learning_rate = config.learning_rate_for(global_batch)
        loss_weights = networks.positive_weights(
            films.labels[split == "train"], config.class_weight
        )
        config.run["learning_rate"] = learning_rate
        if loss_weights is not None:
            config.run["positive_weights"] = dict(
                zip(films.genres, np.round(loss_weights, 3).tolist(), strict=True)
            )
        with strategy.scope():
            model = networks.build_for(config, len(films.genres), vectorizers)
            # What fit trains: uint8 posters in, converted and flipped on the device.
            trainer = networks.poster_input(model, config.augment, config.seed)
            networks.compile_model(trainer, learning_rate, config.jit_compile, loss_weights)
            if config.model != "cnn" and config.embedding_init == "lsa" and not done:
                tokens = inputs["Tokens"] if isinstance(inputs, dict) else inputs
                embedding = networks.overview_embedding(model)
                vectors = lsa_vectors(
                    tokens[split == "train"], embedding.input_dim, embedding.output_dim
                )
                embedding.embeddings.assign(vectors)
        log.info("training %s for %d epochs (%d done)", config.model, config.epochs, done)
        try:
            if multiworker.cluster():
                multiworker.fit(
                    config,
                    learning_rate,
                    loss_weights,
                    strategy,
                    trainer,
                    train_set,
                    validation_set,
                    global_batch,
                    staging,
                    done,
                    on_epoch_end=mirror.sync,
                )
            else:
                stop = StopOnSignal(config.epochs)
                try:
                    build_from_a_plain_batch(trainer, validation_set)
                    trainer.fit(
                        train_set,
                        validation_data=validation_set,
                        epochs=config.epochs,
                        callbacks=keras_callbacks(config, staging, mirror, learning_rate, stop),
                        shuffle=False,  # the dataset shuffles itself
                        verbose=1 if sys.stdout.isatty() else 0,
                    )
                finally:
                    stop.restore()
        except TrainingInterrupted:
            mirror.sync()  # the last finished epoch's backup, checkpoints and logs
            raise
        if not chief:
            log.info("worker done; the chief writes the outputs to %s", config.output)
            return None
        return finish_run(config, vectorizers, films, inputs, split, staging, mirror)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if not chief:
            shutil.rmtree(target, ignore_errors=True)
