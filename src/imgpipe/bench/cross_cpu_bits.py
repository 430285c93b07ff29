"""Do a few seeded training steps give the same bits under another CPU or numerics setting?

Trains the default CNN family at a tiny size (filters [8, 16], dense 32) for STEPS batches of 64
Fashion-MNIST images under op determinism, then prints one line: the SHA-256 of the final
weights, the settings that decide the kernels, and the seconds the steps took. Run it several
ways and compare the hashes, e.g.

    python -m imgpipe.bench.cross_cpu_bits                                   # this CPU, defaults
    TF_ENABLE_ONEDNN_OPTS=0 python -m imgpipe.bench.cross_cpu_bits           # oneDNN off
    TF_NUM_INTRAOP_THREADS=1 python -m imgpipe.bench.cross_cpu_bits          # one intra-op thread
    ONEDNN_MAX_CPU_ISA=AVX2 python -m imgpipe.bench.cross_cpu_bits           # oneDNN limited to AVX2 kernels
    qemu-x86_64 -cpu Haswell .venv/bin/python -m imgpipe.bench.cross_cpu_bits   # an emulated AVX2-only CPU

Needs `make data`.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time

import keras
import numpy as np
import tensorflow as tf

from imgpipe.artifacts.paths import project_paths
from imgpipe.data.preprocess import read_idx_images
from imgpipe.models import builders as models
from imgpipe.training.batches import channel_statistics
from imgpipe.training.fingerprint import machine_fingerprint

STEPS = int(os.environ.get("STEPS", "20"))
BATCH = 64


def main() -> None:
    keras.utils.set_random_seed(42)
    tf.config.experimental.enable_op_determinism()
    x, y = read_idx_images(project_paths().raw_data / "train-images-idx3-ubyte.gz", STEPS * BATCH)
    mean, std = channel_statistics(x)
    model = models.build_model("cnn", x.shape[1:], 10, mean, std,
                               {"filters": [8, 16], "convs_per_block": 1, "dense_units": 32}, dropout=0.1, l2=0.0)
    model.compile(keras.optimizers.Adam(0.002), "sparse_categorical_crossentropy", jit_compile=False)
    started = time.perf_counter()
    model.fit(x.astype(np.float32), y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    seconds = time.perf_counter() - started
    digest = hashlib.sha256(b"".join(np.asarray(w).tobytes() for w in model.get_weights())).hexdigest()
    fingerprint = machine_fingerprint()
    settings = {key: fingerprint[key] for key in ("cpu_model", "intra_op_threads", "onednn_opts", "onednn_max_cpu_isa")}
    settings["avx512f"] = "avx512f" in fingerprint["isa"]
    sys.stdout.write(json.dumps({"sha256": digest[:16], "seconds": round(seconds, 2), "steps": STEPS, **settings}) + "\n")


if __name__ == "__main__":
    main()
