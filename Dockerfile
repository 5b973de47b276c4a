# syntax=docker/dockerfile:1
#
# Image for the `genre-job` CLI (train / predict / merge-predictions / demo-data) on
# Kubernetes GPU nodes, Vertex AI custom jobs, or a workstation with `docker run --gpus`.
#
# Base: the official TensorFlow GPU image, pinned to the tensorflow version in pyproject.toml
# (tests/test_dockerfile.py fails when the two differ). It ships the CUDA, cuDNN and NCCL
# libraries that this exact TF release was built and tested against, so no CUDA toolkit is
# installed here and TF finds the GPU with only the node's NVIDIA driver mounted in.
# For reproducible builds, pin the digest too once it is known in your registry, e.g.
#   ARG BASE_IMAGE=tensorflow/tensorflow:2.21.0-gpu@sha256:<digest>
# BASE_IMAGE: another base with Python 3.11 and this TensorFlow (scripts/build-image --base).
ARG BASE_IMAGE=tensorflow/tensorflow:2.21.0-gpu
FROM ${BASE_IMAGE}

# -o pipefail so a failing step in a RUN pipe fails the build (hadolint DL4006).
SHELL ["/bin/bash", "-o", "pipefail", "-c"]

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    TF_FORCE_GPU_ALLOW_GROWTH=true \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    # The base image's Python is the distribution's; allow pip to add packages to it even
    # where the distribution marks it externally managed (PEP 668). This image is the
    # only consumer of that interpreter.
    PIP_BREAK_SYSTEM_PACKAGES=1

# Unprivileged user with a fixed numeric UID, so Kubernetes' runAsNonRoot can verify it.
# /scratch is the only place the job writes locally (TMPDIR, HOME, Keras cache): on
# Kubernetes an emptyDir is mounted over it and the root filesystem is read-only.
# (10001 is repeated in k8s/ as runAsUser/runAsGroup/fsGroup.)
RUN groupadd --gid 10001 genre \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /scratch \
        --shell /usr/sbin/nologin genre \
    && install -d -o 10001 -g 10001 -m 0770 /scratch
ENV TMPDIR=/scratch \
    HOME=/scratch \
    KERAS_HOME=/scratch/.keras

WORKDIR /opt/genre-job

# Layer 1: third-party dependencies only, from requirements.lock: every package pinned
# with its sha256 hashes (pip refuses anything else). Only pyproject.toml and the lock are
# copied, so this layer is rebuilt when the pins change, not on every code change. The base
# image's TensorFlow must already be the pinned one (checked first), so pip keeps it and
# the CUDA/cuDNN libraries of the image stay matched to the TF that runs.
COPY pyproject.toml requirements.lock ./
RUN python3 -c 'import sys; from importlib.metadata import version; pin = [r.split()[0] for r in open("requirements.lock") if r.startswith("tensorflow==")][0]; sys.exit(0 if pin == "tensorflow==" + version("tensorflow") else "base image has TF " + version("tensorflow") + ", the lock pins " + pin)' \
    && python3 -m pip install --require-hashes --requirement requirements.lock

# Layer 2: the package itself, without touching the dependencies.
COPY job/ ./job/
RUN python3 -m pip install --no-deps . \
    && rm -rf build ./*.egg-info

# The smoke test runs as the job's user: whatever it leaves in HOME (/scratch) is that user's
# (run as root, it once left root's .cache, .config and .keras there, and a run with no volume
# over /scratch could not write them: matplotlib warned on every command).
USER 10001:10001
WORKDIR /scratch
RUN genre-job --help > /dev/null

# No credentials are baked in: on GKE the pod's Kubernetes service account is mapped to a
# Google service account (Workload Identity) and Application Default Credentials pick it up;
# locally, mount ADC read-only and set GOOGLE_APPLICATION_CREDENTIALS.
ENTRYPOINT ["genre-job"]
CMD ["--help"]
