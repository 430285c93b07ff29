"""The learning curves a train stage logs with DVCLive (``dvclive/train/<model>/``), read back.

DVCLive's Keras callback writes one TSV per metric and part (``plots/metrics/{train,eval}/<metric>.tsv``,
steps counted from 0 per epoch); this module is the only reader that knows that layout.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

PARTS = {"train": "train", "eval": "validation"}       # DVCLive's folder → the name the report uses


def curve_file(log_dir: Path, part: str, metric: str) -> Path:
    """The TSV of one metric of one part (``train`` or ``eval``)."""
    return log_dir / "plots" / "metrics" / part / f"{metric}.tsv"


def load_curves(log_dir: Path) -> pd.DataFrame:
    """Per-epoch loss and accuracy on train and validation: columns epoch (from 1), loss, accuracy, part."""
    frames = []
    for folder, part in PARTS.items():
        loss = pd.read_csv(curve_file(log_dir, folder, "loss"), sep="\t")
        accuracy = pd.read_csv(curve_file(log_dir, folder, "accuracy"), sep="\t")
        frame = loss[["step", "loss"]].merge(accuracy[["step", "accuracy"]], on="step")
        frames.append(frame.assign(part=part, epoch=frame["step"] + 1))
    return pd.concat(frames, ignore_index=True)
