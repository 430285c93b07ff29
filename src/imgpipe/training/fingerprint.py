"""The machine fingerprint of a train or evaluate run: everything that can change the numbers.

Same data, params and fingerprint → bit-identical results (op determinism is on by default).
Another CPU kind, another instruction set, another thread count or oneDNN switched off → other
kernels or another reduction order, so other bits; such runs are judged by a statistical
verdict instead (``imgpipe compare``). The fingerprint is written beside each stage's metrics,
not inside them, so ``dvc metrics show`` keeps one numeric column per metric.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
from pathlib import Path
from typing import Any

from imgpipe.artifacts.files import load_json, save_json

# /proc/cpuinfo flags that decide which oneDNN / Eigen kernels run, hence the rounding of the results.
NUMERIC_ISA_FLAGS = ("sse4_1", "sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512dq",
                     "avx512vl", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16", "amx_tile",
                     "amx_bf16", "amx_int8", "amx_fp16")
# Fields that can change the numbers; the others (kernel, Python, core count) are context only.
NUMERIC_FIELDS = ("cpu_model", "cpu_cache", "isa", "intra_op_threads", "inter_op_threads", "onednn_opts",
                  "onednn_max_cpu_isa", "precision_policy", "gpus", "tensorflow", "keras", "numpy")
THREAD_VARIABLES = ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS")
CPUINFO = Path("/proc/cpuinfo")


def first_processor(cpuinfo: str) -> dict[str, str]:
    """The fields of the first processor's block of /proc/cpuinfo text."""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
        if not line.strip() and fields:
            break                                            # the first processor's block is enough
    return fields


def processor_fields(cpuinfo: Path = CPUINFO) -> dict[str, str]:
    """The first processor's fields of a ``/proc/cpuinfo`` file (empty where there is no such file)."""
    try:
        return first_processor(cpuinfo.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return {}


def flags_of(fields: dict[str, str]) -> frozenset[str]:
    """The instruction-set flags among a processor's fields (``Features`` on Arm)."""
    return frozenset((fields.get("flags") or fields.get("Features") or "").split())


def cpu_flags(cpuinfo: Path = CPUINFO) -> frozenset[str]:
    """The instruction-set flags of the first CPU in ``/proc/cpuinfo`` (empty where there is no such file)."""
    return flags_of(processor_fields(cpuinfo))


def cpu_vendor(cpuinfo: Path = CPUINFO) -> str:
    """The first CPU's ``vendor_id`` in ``/proc/cpuinfo`` (``GenuineIntel``, ``AuthenticAMD``; empty if unknown)."""
    return processor_fields(cpuinfo).get("vendor_id", "")


def cpu_description(cpuinfo: str) -> dict[str, Any]:
    """CPU model name, cache size and the numerics-relevant ISA flags from /proc/cpuinfo text."""
    fields = first_processor(cpuinfo)
    flags = set(fields.get("flags", "").split())
    return {"cpu_model": fields.get("model name", platform.processor() or "unknown"),
            "cpu_cache": fields.get("cache size", "unknown"),
            "isa": [flag for flag in NUMERIC_ISA_FLAGS if flag in flags]}


def _version(package: str) -> str:
    for name in (package, f"{package}-cpu"):
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "absent"


def thread_counts(configured_intra: int, configured_inter: int, environ: dict[str, str], cpus: int) -> dict[str, int]:
    """The intra- and inter-op thread counts TensorFlow runs with: set in code, else from its
    environment variables, else its default (one intra-op thread per usable CPU)."""
    intra = configured_intra or int(environ.get("TF_NUM_INTRAOP_THREADS") or 0) or cpus
    inter = configured_inter or int(environ.get("TF_NUM_INTEROP_THREADS") or 0) or cpus
    return {"intra_op_threads": intra, "inter_op_threads": inter}


def onednn_enabled() -> bool:
    """Whether TensorFlow's oneDNN optimizations are on in this process. Their default depends on the
    CPU (on for CPUs with AVX512_VNNI, AVX512_BF16 or AMX; off on e.g. an AVX2-only one), so the
    effective state is asked of TensorFlow; ``TF_ENABLE_ONEDNN_OPTS`` only where it cannot say."""
    try:
        from tensorflow.python.util import _pywrap_util_port       # noqa: PLC0415 (TensorFlow's own switch)

        return bool(_pywrap_util_port.IsMklEnabled())
    except (ImportError, AttributeError):
        return os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1") not in ("0", "false", "False")


def gpu_devices() -> list[Any]:
    """TensorFlow's GPUs on this machine (an empty list on a CPU-only one)."""
    import tensorflow as tf

    return tf.config.list_physical_devices("GPU")


def machine_fingerprint() -> dict[str, Any]:
    """The fingerprint of this process: CPU, ISA, threads, oneDNN, Keras's precision policy, GPUs, versions."""
    import keras                                             # the stages have both loaded already
    import tensorflow as tf

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    cpuinfo = CPUINFO.read_text() if CPUINFO.is_file() else ""
    gpus = [tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name) for gpu in gpu_devices()]
    return {
        **cpu_description(cpuinfo),
        **thread_counts(tf.config.threading.get_intra_op_parallelism_threads(),
                        tf.config.threading.get_inter_op_parallelism_threads(), dict(os.environ), cpus),
        "onednn_opts": onednn_enabled(),
        "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", "default"),
        "precision_policy": keras.mixed_precision.global_policy().name,
        "gpus": gpus,
        "tensorflow": tf.__version__, "keras": _version("keras"), "numpy": _version("numpy"),
        "usable_cpus": cpus, "python": platform.python_version(), "kernel": platform.release(),
        "thread_variables": {name: os.environ[name] for name in THREAD_VARIABLES if name in os.environ},
    }


def numeric_differences(first: dict[str, Any] | None, second: dict[str, Any] | None) -> list[str]:
    """The numerics-relevant fields in which two fingerprints differ (all of them when one is unknown)."""
    if first is None or second is None:
        return ["fingerprint not recorded"]
    return [field for field in NUMERIC_FIELDS if first.get(field) != second.get(field)]


def save_fingerprint(fingerprint: dict[str, Any], path: Path) -> None:
    """Write a fingerprint file (atomically)."""
    save_json(fingerprint, path)


def load_fingerprint(path: Path) -> dict[str, Any]:
    """Read a fingerprint file."""
    return dict(load_json(path))
