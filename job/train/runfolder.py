"""What `train --output` may be: absent, empty, or a run of this job with the same settings.

Checked before anything is written there (lock, config.json, staging): a folder of someone
else's files is never pulled into staging nor written into, and an unfinished run is only
resumed by the command that started it. No TensorFlow here: the CLI checks before loading it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import posixpath
import re

from job import storage
from job.config import TrainConfig, legacy_settings
from job.errors import OutputError
from job.storage.lock import LOCK_NAME

CONFIG = "config.json"
SUCCESS = "_SUCCESS"
# Settings that do not change what a run trains: where posters are cached, and what the
# run fills in itself (poster_decoding comes from a prepared dataset's manifest).
UNCOMPARED = {"output", "overwrite", "cache", "cache_dir", "run", "poster_decoding"}
# A local write killed between its temporary file and the rename (storage.write_bytes).
PARTIAL_WRITE = re.compile(r"\.tmp-[0-9a-f]{32}$")
SHOWN = 3  # differences or file names a message names


def location(url: str) -> tuple[str, str]:
    """(scheme, normalised path) of a URL or local path, for comparing two of them."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "file", os.path.realpath(os.path.expanduser(url))
    scheme = {"gcs": "gs"}.get(scheme.lower(), scheme.lower())
    if scheme == "file":
        return "file", os.path.realpath(rest)
    return scheme, posixpath.normpath("/" + rest)


def overlap(data: str, output: str) -> str | None:
    """How --output and --data overlap (the same place, or one inside the other), if they do."""
    (data_scheme, data_path), (out_scheme, out_path) = location(data), location(output)
    if data_scheme != out_scheme:
        return None
    if data_path == out_path:
        return "is --data itself"
    if out_path.startswith(data_path.rstrip("/") + "/"):
        return "is inside --data"
    if data_path.startswith(out_path.rstrip("/") + "/"):
        return "holds --data"
    return None


def check_output(config: TrainConfig) -> None:
    """Raise OutputError unless `config.output` is absent, empty, or a run this config may
    resume (same settings), or a finished or other run that `--overwrite` replaces."""
    output = config.output
    try:
        files = [f for f in storage.list_files(output) if not PARTIAL_WRITE.search(f)]
    except PermissionError as error:
        raise OutputError(f"{output}: cannot read the output location ({error})") from None
    if not files or files == [LOCK_NAME]:  # new, or a run killed before its config.json
        return
    stored = read_config(output) if CONFIG in files else None
    if stored is None:
        more = f" and {len(files) - SHOWN} more" if files[SHOWN:] else ""
        raise OutputError(
            f"{output} holds files that are not a genre-job run ({', '.join(files[:SHOWN])}{more})",
            "choose another --output: absent, empty, or a run of this job",
        )
    if config.overwrite:
        return
    if SUCCESS in files:
        raise OutputError(
            f"{output} already holds a finished run", "choose another --output or pass --overwrite"
        )
    # A run begun before a setting existed resumes with what it trained with.
    for name, value in legacy_settings(stored).items():
        setattr(config, name, value)
    changed = differences(stored, config)
    if changed:
        shown = "; ".join(changed[:SHOWN]) + (
            f"; and {len(changed) - SHOWN} more" if changed[SHOWN:] else ""
        )
        raise OutputError(
            f"{output} holds a run with other settings: {shown}",
            "choose another --output, or pass --overwrite to replace that run",
        )


def read_config(output: str) -> dict | None:
    """The run's config.json, or None when it is not one a run of this job wrote."""
    try:
        stored = json.loads(storage.read_bytes(storage.join(output, CONFIG)))
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(stored, dict) or not {"model", "data", "recipe"} <= set(stored):
        return None
    return stored


def differences(stored: dict, config: TrainConfig) -> list[str]:
    """'--name X there, Y here' for each setting the stored run has with another value."""
    current = json.loads(config.to_json())  # as config.json holds it (URLs redacted)
    changed = []
    for field in dataclasses.fields(TrainConfig):
        name = field.name
        if name in UNCOMPARED or name not in stored or stored[name] == current[name]:
            continue
        flag = f"--{name.replace('_', '-')}"
        changed.append(f"{flag} {show(stored[name])} there, {show(current[name])} here")
    return changed


def show(value: object) -> str:
    if value is None:
        return "unset"
    return str(value).lower() if isinstance(value, bool) else str(value)
