"""Where a run computes: the distribution strategy over the devices there are, and the
precision it computes in."""

from __future__ import annotations

from pathlib import Path

import tensorflow as tf

from job.config import TrainConfig
from job.train import multiworker


def make_strategy(cpu_replicas: int) -> tf.distribute.Strategy:
    """MultiWorkerMirroredStrategy when TF_CONFIG names several workers; otherwise
    MirroredStrategy over all local GPUs, or over the CPU (split in `cpu_replicas`)."""
    if multiworker.cluster():
        return tf.distribute.MultiWorkerMirroredStrategy()
    if tf.config.list_physical_devices("GPU"):
        return tf.distribute.MirroredStrategy()
    if cpu_replicas > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        try:
            tf.config.set_logical_device_configuration(
                cpu, [tf.config.LogicalDeviceConfiguration()] * cpu_replicas
            )
        except RuntimeError:
            pass  # already initialised (a second run in one process): use what is there
    devices = [d.name for d in tf.config.list_logical_devices("CPU")][: max(cpu_replicas, 1)]
    # CPU collectives fail on the embedding's sparse gradients when replicas see different
    # tokens ("shape mismatch in the collective"): reduce through one device instead.
    return tf.distribute.MirroredStrategy(
        devices, cross_device_ops=tf.distribute.ReductionToOneDevice()
    )


def precision_policy(config: TrainConfig) -> str:
    """float32, or mixed precision: float16 on GPUs, bfloat16 on CPUs (float32 outputs).

    Unset, it is on with a GPU, and on a CPU with bfloat16 units (AMX / AVX512-BF16) for
    the cnn only: there the CNN trained 2x faster at the same micro-F1, while the LSTM
    was slower (docs/accuracy.md).
    """
    gpu = bool(tf.config.list_physical_devices("GPU"))
    wanted = config.mixed_precision
    if wanted is None:
        wanted = gpu or (config.model == "cnn" and cpu_has_bfloat16())
    return ("mixed_float16" if gpu else "mixed_bfloat16") if wanted else "float32"


def cpu_has_bfloat16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags
