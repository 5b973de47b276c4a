"""Which file in the posters folder is each film's: `<Id>.<extension>`, found in one listing.

The extension may be any of POSTER_EXTENSIONS in any case (`tt1.JPG`, `tt1.jpeg`,
`tt1.png`); the Id is matched exactly. What the file holds is told by its bytes when it
is decoded (job/jpegs.py), not by its name.
"""

from __future__ import annotations

import logging
import os
import posixpath

from job import storage

log = logging.getLogger(__name__)

# The formats tf.io.decode_image reads; a film with several poster files gets the first of
# these (an exact lower-case name before other cases).
POSTER_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp")


def find_posters(images_url: str, ids: list[str]) -> list[str | None]:
    """Each film's poster file name under `images_url`, in the order of `ids`; None where a
    film has none. One listing of the folder (a missing folder holds no posters)."""
    candidates: dict[str, list[tuple[int, bool, str]]] = {}
    for name in folder_names(images_url):
        stem, dot, extension = name.rpartition(".")
        extension = f".{extension.lower()}"
        if dot and extension in POSTER_EXTENSIONS:
            rank = (POSTER_EXTENSIONS.index(extension), name != name.lower(), name)
            candidates.setdefault(stem, []).append(rank)
    names: list[str | None] = []
    several = []
    for film_id in ids:
        ranked = sorted(candidates.get(film_id, []))
        names.append(ranked[0][2] if ranked else None)
        if len(ranked) > 1:
            several.append(f"{film_id}: {', '.join(name for *_, name in ranked)}")
    if several:
        log.warning(
            "%d films have more than one poster file, the first of each is used (e.g. %s)",
            len(several),
            "; ".join(several[:3]),
        )
    return names


def folder_names(url: str) -> list[str]:
    """The names of the files directly in the folder at `url`; none when it is missing."""
    local = storage.local_path(url)
    if local is not None:
        # One os.listdir: 2 ms for the 5,332 real posters against 11 ms for a look-up each.
        try:
            return os.listdir(local)
        except OSError:  # missing, not a folder, not readable: no posters there
            return []
    fs, path = storage.filesystem(url)

    def listing() -> list[str]:
        fs.invalidate_cache(path)  # (fsspec keeps listings: files may have come since)
        try:
            return fs.ls(path, detail=False)
        except FileNotFoundError:
            return []

    return [posixpath.basename(p.rstrip("/")) for p in storage.retrying("list", url, listing)]
