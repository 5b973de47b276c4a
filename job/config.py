"""One typed config for a training run; saved as config.json with the outputs."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field

DEFAULT_EPOCHS = {"cnn": 40, "lstm": 20}
CSV_NAME = "IMDB_overview_genres.csv"
IMAGES_NAME = "Images"


@dataclass
class TrainConfig:
    model: str  # "cnn" (posters) or "lstm" (overviews)
    data: str  # dataset root URL: gs://, memory://, or a local folder
    output: str  # run folder URL; defaults to $AIP_MODEL_DIR (Vertex AI)
    # Vertex AI: AIP_CHECKPOINT_DIR / AIP_TENSORBOARD_LOG_DIR; None: under `output`.
    checkpoint_dir: str | None = None  # checkpoints/ and backup/
    tensorboard_dir: str | None = None  # train/ and validation/ event files
    csv: str = CSV_NAME
    images: str = IMAGES_NAME
    epochs: int | None = None  # None: 40 for cnn, 20 for lstm (the seed's)
    batch_size: int = 64  # per replica; the global batch is this x replicas
    learning_rate: float = 1e-4
    constant_epochs: int = 10  # the seed's schedule: constant, then x exp(-decay) per epoch
    lr_decay: float = 0.01
    seed: int = 42
    validation_fraction: float = 0.1
    evaluation_fraction: float = 0.1
    image_size: int = 64
    augment: bool = True  # random horizontal flips of training posters
    max_tokens: int = 10_000
    sequence_length: int = 100
    recurrent_dropout: float = 0.2
    jit_compile: bool = False
    mixed_precision: bool = False
    cpu_replicas: int = 1  # >1 splits the CPU into logical devices when there is no GPU
    overwrite: bool = False
    # Filled in by the run: films used and dropped, versions, replicas.
    run: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.epochs is None:
            self.epochs = DEFAULT_EPOCHS[self.model]

    def to_json(self) -> str:
        from job.logs import redact  # a signed URL's signature never reaches config.json

        values = dataclasses.asdict(self)
        values["data"], values["output"] = redact(self.data), redact(self.output)
        return json.dumps(values, indent=2, sort_keys=True, default=str)

    @classmethod
    def from_json(cls, text: str) -> TrainConfig:
        values = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


def env_default(*names: str) -> str | None:
    """The first of these environment variables that is set (e.g. AIP_MODEL_DIR on Vertex AI)."""
    for name in names:
        if os.environ.get(name):
            return os.environ[name]
    return None
