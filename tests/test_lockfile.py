"""requirements.lock (hash-pinned, for the image) agrees with pyproject.toml."""

from __future__ import annotations

import re
import tomllib

from conftest import ROOT

LOCK = ROOT / "requirements.lock"


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def locked() -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes) from the lock file's `name==version \\ --hash=...` entries."""
    entries: dict[str, tuple[str, list[str]]] = {}
    text = LOCK.read_text().replace("\\\n", " ")
    for line in text.splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-]+)(\[[^\]]*\])?==(\S+)\s*(.*)$", line)
        if match:
            hashes = re.findall(r"--hash=sha256:([0-9a-f]{64})", match.group(4))
            entries[normalise(match.group(1))] = (match.group(3), hashes)
    return entries


def test_lock_file_says_how_to_regenerate_it():
    head = LOCK.read_text().splitlines()[:3]
    assert any("uv pip compile pyproject.toml --generate-hashes" in line for line in head)


def test_every_pinned_dependency_is_locked_with_the_same_version_and_hashes():
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    entries = locked()
    for spec in dependencies:
        name, _, version = spec.partition("==")
        assert version, f"{spec}: not pinned in pyproject.toml"
        name = normalise(re.sub(r"\[.*\]", "", name))
        assert name in entries, f"{name} missing from requirements.lock"
        assert entries[name][0] == version, f"{name}: lock {entries[name][0]}, pyproject {version}"


def test_every_locked_package_is_pinned_and_hashed():
    entries = locked()
    assert len(entries) > 20  # the whole tree, not only the direct dependencies
    for name, (version, hashes) in entries.items():
        assert re.fullmatch(r"[0-9][0-9A-Za-z.+!-]*", version), (name, version)
        assert hashes, f"{name}=={version} has no --hash"
