"""Numeric precision of training: float32, or bfloat16 compute with float32 weights where the CPU has bf16 units.

``auto`` decides by what the machine has, as measured (docs/performance.md):

* a GPU → ``mixed_float16`` (Tensor Cores);
* a CPU with AMX-BF16 tile units (Intel Sapphire Rapids and later) → ``mixed_bfloat16``: oneDNN runs
  convolutions and matrix products on the tiles;
* an AMD CPU with AVX512_BF16 (Zen 4 and later) → ``mixed_bfloat16``: on a Zen 4 EPYC the CNN's training
  step was 1.47× faster, the GRU's 1.35×, the transformer's 1.03×;
* any other CPU, an Intel one with AVX512_BF16 but no AMX included → ``float32``: there bf16 brought no
  speed-up worth its rounding (one epoch of a small CNN was 1.5× slower on such a Xeon).
"""

from __future__ import annotations

import logging

import keras

from imgpipe.training.fingerprint import flags_of, gpu_devices, processor_fields

LOGGER = logging.getLogger(__name__)
PRECISIONS = ("float32", "mixed_bfloat16", "auto")


def auto_policy(flags: frozenset[str], has_gpu: bool, vendor: str = "") -> str:
    """The policy ``auto`` picks for a machine with these CPU ``flags`` and ``vendor`` (and a GPU or not)."""
    if has_gpu:
        return "mixed_float16"
    if "amx_bf16" in flags or ("avx512_bf16" in flags and vendor == "AuthenticAMD"):
        return "mixed_bfloat16"
    return "float32"


def resolve_precision(setting: str, flags: frozenset[str] | None = None, has_gpu: bool | None = None,
                      vendor: str | None = None) -> str:
    """The Keras dtype policy name for a ``train.<model>.precision`` setting on this machine."""
    if setting not in PRECISIONS:
        raise ValueError(f"precision={setting!r} is not known; expected one of {', '.join(PRECISIONS)}.")
    if setting != "auto":
        return setting
    if has_gpu is None:
        has_gpu = bool(gpu_devices())
    fields = processor_fields() if flags is None or vendor is None else {}        # /proc/cpuinfo read once
    return auto_policy(flags_of(fields) if flags is None else flags, has_gpu,
                       fields.get("vendor_id", "") if vendor is None else vendor)


def set_precision(setting: str) -> str:
    """Set the global Keras dtype policy for ``setting`` and return the policy's name (recorded with the run)."""
    policy = resolve_precision(setting)
    keras.mixed_precision.set_global_policy(policy)
    LOGGER.info("precision %s → dtype policy %s", setting, policy)
    return policy
