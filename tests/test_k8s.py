"""The Kubernetes manifests as scripts/submit renders them: valid objects for every job and
flag combination (Kubernetes 1.31 and the newest schemas), and what the workloads must do
(locked-down pods, GPU and failure policies, Indexed Jobs, the JobSet's TF_CONFIG, args the
real CLI parses). Rendering and validation: tests/support/k8s.py.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess

import pytest
import yaml
from support.k8s import (
    BASE,
    JOBS,
    K8S_VERSIONS,
    OVERLAY,
    ROOT,
    RUN_ID_RE,
    VAR_RE,
    WORKLOAD,
    job_specs,
    one,
    parse_with_cli,
    pod_specs,
    render,
    resolved_args,
    split_command,
    validate,
)

from job import errors
from job.train import multiworker

try:
    import kubernetes_validate
except ImportError:  # pragma: no cover - tells what to install instead of a bare error
    kubernetes_validate = None

# --- schema validation --------------------------------------------------------------


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("job", JOBS)
def test_submit_renders_valid_objects(kubectl, job, version):
    objs = render("--job", job)
    kinds = sorted(o["kind"] for o in objs)
    assert kinds == sorted(["ServiceAccount", "ConfigMap", WORKLOAD[job][0]])
    for obj in objs:
        try:
            validate(obj, version)
        except Exception as exc:  # kubernetes_validate errors carry the path in str()
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} invalid for {version}: {exc}")


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_plain_overlay_renders_valid_objects(kubectl, version):
    out = subprocess.run(
        [kubectl, "kustomize", str(OVERLAY)], capture_output=True, text=True, check=True
    ).stdout
    objs = [d for d in yaml.safe_load_all(out) if d]
    assert sorted(o["kind"] for o in objs) == sorted(
        ["ServiceAccount", "ConfigMap", "Job", "Job", "Job", "JobSet"]
    )
    for obj in objs:
        validate(obj, version)
        assert obj["metadata"]["namespace"] == "genre"


# The run settings scripts/submit offers beyond the run's name, model and data.
PLATFORM_FLAGS = {
    "gpu-type": ["--gpu-type", "nvidia-tesla-t4"],
    "spot": ["--spot"],
    "queue": ["--queue", "team-a"],
}
FLAG_COMBINATIONS = [
    combination
    for count in range(len(PLATFORM_FLAGS) + 1)
    for combination in itertools.combinations(PLATFORM_FLAGS, count)
]
SPOT_TOLERATION = {
    "key": "cloud.google.com/gke-spot",
    "operator": "Equal",
    "value": "true",
    "effect": "NoSchedule",
}


@pytest.mark.parametrize("flags", FLAG_COMBINATIONS, ids=lambda c: "+".join(c) or "none")
@pytest.mark.parametrize("job", JOBS)
def test_every_flag_combination_renders_valid_objects(kubectl, job, flags):
    objs = render("--job", job, *[arg for flag in flags for arg in PLATFORM_FLAGS[flag]])
    for obj, version in itertools.product(objs, K8S_VERSIONS):
        try:
            validate(obj, version)
        except Exception as exc:  # kubernetes_validate errors carry the path in str()
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} invalid for {version}: {exc}")
    workload = one(objs, WORKLOAD[job][0])
    training = job.startswith("train")
    for spec in pod_specs(workload):
        selector = spec.get("nodeSelector", {})
        tolerations = spec.get("tolerations", [])
        if training:
            gpu = "nvidia-tesla-t4" if "gpu-type" in flags else "nvidia-l4"
            assert selector["cloud.google.com/gke-accelerator"] == gpu
            assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in (
                tolerations
            )
        else:  # predict runs on CPU nodes
            assert "cloud.google.com/gke-accelerator" not in selector
        if "spot" in flags:
            assert selector["cloud.google.com/gke-spot"] == "true"
            assert tolerations.count(SPOT_TOLERATION) == 1
            # GKE's Spot notice is 30 s, of which non-system pods get 15-25 s.
            assert spec["terminationGracePeriodSeconds"] == 25
        else:
            assert "cloud.google.com/gke-spot" not in json.dumps(spec)
            assert spec["terminationGracePeriodSeconds"] >= 60
    labels = workload["metadata"]["labels"]
    if "queue" in flags:
        assert labels["kueue.x-k8s.io/queue-name"] == "team-a"
        assert workload["spec"]["suspend"] is True  # Kueue starts it once admitted
    else:
        assert "kueue.x-k8s.io/queue-name" not in labels
        assert not workload["spec"].get("suspend", False)


def test_overlay_may_list_the_spot_and_kueue_components_itself(kubectl, tmp_path):
    """An overlay with its own Spot and queue settings; submit's flags on top of it change
    the queue and add nothing twice."""
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    components = ROOT / "k8s" / "components"
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [os.path.relpath(OVERLAY, overlay)],
                "components": [
                    os.path.relpath(components / name, overlay)
                    for name in ("run-settings", "spot", "kueue")
                ],
                "configMapGenerator": [
                    {
                        "name": "genre-run",
                        "behavior": "merge",
                        "literals": ["QUEUE=team-a", "GPU_TYPE=nvidia-h100-80gb"],
                    }
                ],
            }
        )
    )
    for extra, queue in (([], "team-a"), (["--spot", "--queue", "team-b"], "team-b")):
        objs = render("--overlay", str(overlay), "--job", "train-multinode", *extra)
        jobset = one(objs, "JobSet")
        assert jobset["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == queue
        assert jobset["spec"]["suspend"] is True
        (spec,) = pod_specs(jobset)
        assert spec["nodeSelector"] == {
            "cloud.google.com/gke-accelerator": "nvidia-h100-80gb",
            "cloud.google.com/gke-spot": "true",
        }
        assert [t["key"] for t in spec["tolerations"]] == [
            "nvidia.com/gpu",
            "cloud.google.com/gke-spot",
        ]
        for version in K8S_VERSIONS:
            validate(jobset, version)


def test_base_has_one_object_per_file_and_lists_them_all():
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    files = sorted(p.name for p in BASE.glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(kustomization["resources"]) == files
    for name in files:
        docs = [d for d in yaml.safe_load_all((BASE / name).read_text()) if d]
        assert len(docs) == 1, name


# --- what the workloads must do -------------------------------------------------------


@pytest.mark.parametrize("job", JOBS)
def test_every_arg_variable_is_defined(kubectl, job):
    """An undefined $(VAR) would reach the CLI literally: the kubelet leaves it as is."""
    objs = render("--job", job)
    for args in resolved_args(objs, WORKLOAD[job][0]):
        leftovers = [a for a in args if VAR_RE.search(a)]
        if job == "predict-sharded":  # set by the Job controller in Indexed mode
            assert leftovers == ["--shard-index=$(JOB_COMPLETION_INDEX)"]
        else:
            assert leftovers == []


@pytest.mark.parametrize("job", JOBS)
def test_pods_are_locked_down(kubectl, job):
    objs = render("--job", job)
    sa = one(objs, "ServiceAccount")
    assert sa["metadata"]["annotations"]["iam.gke.io/gcp-service-account"].endswith(
        ".iam.gserviceaccount.com"
    )
    for spec in pod_specs(one(objs, WORKLOAD[job][0])):
        assert spec["serviceAccountName"] == sa["metadata"]["name"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] == 10001  # the Dockerfile's USER
        volumes = {v["name"]: v for v in spec["volumes"]}
        for c in spec["containers"]:
            assert c["securityContext"]["readOnlyRootFilesystem"] is True
            assert c["securityContext"]["allowPrivilegeEscalation"] is False
            mounts = {m["mountPath"]: volumes[m["name"]] for m in c["volumeMounts"]}
            assert mounts["/dev/shm"]["emptyDir"]["medium"] == "Memory"
            assert "emptyDir" in mounts["/scratch"]  # TMPDIR of the image
            for key in ("cpu", "memory"):
                assert c["resources"]["requests"][key] and c["resources"]["limits"][key]


def check_job_policy(job: dict, container: str) -> None:
    spec = job["spec"]
    assert spec["backoffLimit"] >= 1
    assert spec["activeDeadlineSeconds"] > 0
    assert spec["ttlSecondsAfterFinished"] > 0
    assert spec["template"]["spec"]["restartPolicy"] == "Never"
    rules = spec["podFailurePolicy"]["rules"]
    fail = [r for r in rules if r["action"] == "FailJob" and "onExitCodes" in r]
    assert all(r["onExitCodes"]["containerName"] == container for r in fail)
    assert all(r["onExitCodes"]["operator"] == "In" for r in fail)
    # The README's exit codes: 2 usage, 3 bad input, 4 output refused fail the Job at
    # once; 1 (e.g. storage unreachable) and 143 (SIGTERM) are retried.
    codes = {c for r in fail for c in r["onExitCodes"]["values"]}
    assert codes == {2, 3, 4}
    # The job's own codes are those.
    assert (errors.InputError.exit_code, errors.OutputError.exit_code) == (3, 4)
    assert (errors.GenreJobError.exit_code, errors.TrainingInterrupted.exit_code) == (1, 143)
    assert any(
        r["action"] == "Ignore"
        and {"type": "DisruptionTarget", "status": "True"} in r.get("onPodConditions", [])
        for r in rules
    ), "preemption (DisruptionTarget) must not count against backoffLimit"


def test_train_job_gpu_and_failure_policy(kubectl):
    objs = render("--job", "train", "--gpus", "2", "--model", "lstm", "--epochs", "7")
    job = one(objs, "Job")
    spec = job["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    check_job_policy(job, c["name"])
    assert int(c["resources"]["limits"]["nvidia.com/gpu"]) == 2
    assert "cloud.google.com/gke-accelerator" in spec["nodeSelector"]
    assert any(
        t["key"] == "nvidia.com/gpu" and t["effect"] == "NoSchedule" for t in spec["tolerations"]
    )
    (args,) = resolved_args(objs, "Job")
    assert split_command(args)[1] == "train"
    assert "--model=lstm" in args and "--epochs=7" in args
    assert any(re.fullmatch(r"--data=gs://[a-z0-9._-]+/.+", a) for a in args)


@pytest.mark.parametrize("job", ["predict", "predict-sharded"])
def test_predict_jobs_run_on_cpu(kubectl, job):
    objs = render("--job", job, "--model-run", "cnn-20260101-000000-abcd")
    workload = one(objs, "Job")
    (c,) = workload["spec"]["template"]["spec"]["containers"]
    check_job_policy(workload, c["name"])
    assert "nvidia.com/gpu" not in c["resources"].get("limits", {})
    assert "nodeSelector" not in workload["spec"]["template"]["spec"]
    (args,) = resolved_args(objs, "Job")
    assert split_command(args)[1] == "predict"
    assert "--model-dir=gs://my-genre-bucket/runs/cnn-20260101-000000-abcd" in args


def test_sharded_predict_is_an_indexed_job(kubectl):
    objs = render("--job", "predict-sharded")
    spec = one(objs, "Job")["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == spec["parallelism"]
    (args,) = resolved_args(objs, "Job")
    assert f"--shard-count={spec['completions']}" in args
    assert "--shard-index=$(JOB_COMPLETION_INDEX)" in args
    (output,) = [a for a in args if a.startswith("--output=")]
    assert re.fullmatch(rf"--output=gs://my-genre-bucket/runs/{RUN_ID_RE}/predictions/", output)


def test_multinode_jobset_structure(kubectl):
    image = "registry.example/genre/genre-job:test"
    objs = render("--job", "train-multinode", "--gpus", "4", "--image", image)
    jobset = one(objs, "JobSet")
    assert jobset["apiVersion"] == "jobset.x-k8s.io/v1alpha2"
    assert re.fullmatch(rf"genre-train-mn-{RUN_ID_RE}", jobset["metadata"]["name"])
    spec = jobset["spec"]
    assert spec["network"]["enableDNSHostnames"] is True
    assert "subdomain" not in spec["network"]  # job/train/multiworker.py assumes the default
    (replicated,) = spec["replicatedJobs"]
    assert replicated["replicas"] >= 2
    job = replicated["template"]["spec"]
    # One pod per Job: job.train.multiworker.tf_config_from_jobset numbers workers by Job index.
    assert job["completions"] == job["parallelism"] == 1
    assert job["completionMode"] == "Indexed"
    assert job["backoffLimit"] == 0  # a failed pod fails its Job: the JobSet restarts all
    assert job["template"]["spec"]["restartPolicy"] == "Never"
    (c,) = job["template"]["spec"]["containers"]
    assert c["image"] == image
    assert int(c["resources"]["limits"]["nvidia.com/gpu"]) == 4
    ports = [p["containerPort"] for p in c["ports"]]
    assert ports == [multiworker.WORKER_PORT]
    for args in resolved_args(objs, "JobSet"):
        assert split_command(args)[1] == "train"
        assert any(
            re.fullmatch(rf"--output=gs://my-genre-bucket/runs/{RUN_ID_RE}", a) for a in args
        )


def test_jobset_failure_policy_follows_the_exit_codes(kubectl):
    """2/3/4 fail the whole JobSet at once; 143 (SIGTERM, backup saved) and 1 restart it."""
    jobset = one(render("--job", "train-multinode"), "JobSet")
    policy = jobset["spec"]["failurePolicy"]
    assert policy["maxRestarts"] >= 1
    assert policy["restartStrategy"] == "BlockingRecreate"  # old pods gone before new ones
    (rule,) = policy["rules"]
    assert rule["action"] == "FailJobSet" and rule["onJobFailureReasons"] == ["PodFailurePolicy"]
    (job,) = job_specs(jobset)
    (container,) = job["template"]["spec"]["containers"]
    (fail,) = job["podFailurePolicy"]["rules"]
    assert fail["action"] == "FailJob"
    assert fail["onExitCodes"]["containerName"] == container["name"]
    assert fail["onExitCodes"]["operator"] == "In"
    assert sorted(fail["onExitCodes"]["values"]) == [2, 3, 4]  # the README's codes
    assert errors.SetupError.exit_code == 2


def fake_jobset_pod_env(jobset: dict, job_index: int) -> dict[str, str]:
    """The env of JobSet pod `job_index`: its fieldRefs resolved against the annotations
    the JobSet controller puts on its pods (jobset.sigs.k8s.io/*)."""
    (replicated,) = jobset["spec"]["replicatedJobs"]
    annotations = {
        "jobset.sigs.k8s.io/jobset-name": jobset["metadata"]["name"],
        "jobset.sigs.k8s.io/replicatedjob-name": replicated["name"],
        "jobset.sigs.k8s.io/job-index": str(job_index),
        "jobset.sigs.k8s.io/replicatedjob-replicas": str(replicated["replicas"]),
    }
    (container,) = replicated["template"]["spec"]["template"]["spec"]["containers"]
    env = {"JOB_COMPLETION_INDEX": "0"}  # the Job controller's, in Indexed mode
    for var in container["env"]:
        ref = var["valueFrom"].get("fieldRef")
        if ref:
            key = re.fullmatch(r"metadata\.annotations\['(.+)'\]", ref["fieldPath"]).group(1)
            env[var["name"]] = annotations[key]
    return env


def test_jobset_pods_get_a_tf_config_naming_each_others_hostnames(kubectl):
    jobset = one(render("--job", "train-multinode"), "JobSet")
    name = jobset["metadata"]["name"]
    (replicated,) = jobset["spec"]["replicatedJobs"]
    nodes = replicated["replicas"]
    configs = [
        multiworker.tf_config_from_jobset(fake_jobset_pod_env(jobset, i)) for i in range(nodes)
    ]
    # JobSet's pod hostnames: <jobset>-<replicated job>-<job index>-<pod index>.<subdomain>
    hosts = [f"{name}-{replicated['name']}-{i}-0.{name}:2222" for i in range(nodes)]
    assert [c["cluster"] for c in configs] == [{"worker": hosts}] * nodes
    assert [c["task"] for c in configs] == [{"type": "worker", "index": i} for i in range(nodes)]
    # Every pod carries the same run id (the lock's owner across restarts).
    run_ids = {fake_jobset_pod_env(jobset, i)["GENRE_JOB_RUN_ID"] for i in range(nodes)}
    assert run_ids == {name}


@pytest.mark.parametrize("job", JOBS)
def test_args_parse_with_the_real_cli(kubectl, job):
    """What the pods would run is accepted by genre-job's own option parser."""
    objs = render("--job", job, "--model", "lstm", "--gpus", "2")
    for args in resolved_args(objs, WORKLOAD[job][0]):
        args = [a.replace("$(JOB_COMPLETION_INDEX)", "0") for a in args]
        params = parse_with_cli(args)
        assert params["log_format"] == "json"  # Cloud Logging
        run_folder = f"gs://my-genre-bucket/runs/{one(objs, 'ConfigMap')['data']['RUN_ID']}"
        if job.startswith("train"):
            assert params["command"] == "train"
            assert params["model"] == "lstm"
            assert params["output"] == run_folder
        else:
            assert params["command"] == "predict"
            assert params["model_dir"].startswith("gs://my-genre-bucket/runs/")
            if job == "predict-sharded":
                spec = one(objs, "Job")["spec"]
                assert params["shard_count"] == spec["completions"] > 1
                assert params["output"] == f"{run_folder}/predictions/"
            else:
                assert params["output"] == f"{run_folder}/predictions.csv"
