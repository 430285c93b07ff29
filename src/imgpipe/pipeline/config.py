"""The typed schema of ``params.yaml`` and helpers to read one stage's parameters.

Every stage validates the whole file before doing any work, so a misspelled key or an
out-of-range value stops the run with one message naming the key, the value and what
is allowed, instead of a TensorFlow traceback minutes later.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from imgpipe import MODEL_NAMES
from imgpipe.models.shapes import input_size_problem


class ParamsError(ValueError):
    """``params.yaml`` is missing, unreadable or holds an invalid value."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PreprocessParams(_Strict):
    """Where the raw images come from, the shape they are brought to, and how they are cleaned."""

    source: Literal["idx", "folder", "csv"] = Field(
        description="idx: MNIST-format IDX files; folder: one sub-folder per class; csv: a manifest of path,label")
    path: str = Field(min_length=1, description="under data/raw: the IDX folder, the class-folder root or the CSV")
    class_names: list[str] = Field(description="idx only: names of labels 0..K-1; [] names them by number")
    image_size: list[int] = Field(min_length=2, max_length=2, description="[height, width]; [0, 0] keeps the source size")
    channels: Literal[0, 1, 3] = Field(description="1 gray, 3 RGB, 0 keeps the source channels")
    resize: Literal["stretch", "pad", "crop"]
    min_side: int = Field(ge=1, description="images with a shorter side are dropped as too small")
    max_pixels: int = Field(ge=1, description="images with more pixels are dropped (decompression bombs)")
    min_images_per_class: int = Field(ge=1, description="fewer kept images in a class is an error naming it")
    blank_max_std: float = Field(ge=0.0, description="images whose pixel std is at most this are blank")
    drop_exact_duplicates: bool
    drop_conflicting_duplicates: bool
    workers: int = Field(ge=0, description="decoding processes; 0 = one per CPU core")

    @model_validator(mode="after")
    def _consistent(self) -> "PreprocessParams":
        if any(side != 0 and side < 4 for side in self.image_size) or (0 in self.image_size) != (
                self.image_size == [0, 0]):
            raise ValueError(f"image_size={self.image_size} must be [0, 0] (keep) or two sides of at least 4 pixels")
        if self.source != "idx" and (self.image_size == [0, 0] or self.channels == 0):
            raise ValueError(f"source={self.source!r} needs an explicit image_size and channels (1 or 3), "
                             f"found image_size={self.image_size}, channels={self.channels}")
        path = Path(self.path)
        if path.is_absolute() or ".." in path.parts or path.parts[:2] != ("data", "raw"):
            raise ValueError(f"path={self.path!r} must lie under data/raw (the folder data.dvc tracks and the "
                             "preprocess stage depends on)")
        return self


class SplitParams(_Strict):
    """How the images are divided into train, validation and test."""

    val_fraction: float = Field(gt=0.0, lt=1.0)
    test_fraction: float = Field(gt=0.0, lt=1.0, description="only for sources without an official test set")
    seed: int = Field(ge=0)
    limit_per_class: int = Field(ge=0, description="0 keeps every image; otherwise at most this many per class and part")
    shard_mb: float = Field(gt=0.0, le=4096.0, description="largest shard file of the train and validation parts")

    @model_validator(mode="after")
    def _fractions_leave_training_images(self) -> "SplitParams":
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ValueError(f"val_fraction + test_fraction = {self.val_fraction + self.test_fraction:g} "
                             "must stay below 1 to leave images for training")
        return self


class AugmentParams(_Strict):
    """Label-preserving augmentation for clothing images; every switch can be turned off."""

    horizontal_flip: bool
    crop_padding: int = Field(ge=0, le=16, description="pixels of zero padding before a random crop back to size")
    random_erasing: float = Field(ge=0.0, le=1.0, description="share of images that get one random rectangle zeroed")


class CnnArchitecture(_Strict):
    filters: list[int] = Field(min_length=1)
    convs_per_block: int = Field(ge=1, le=4)
    dense_units: int = Field(gt=0)


class RnnArchitecture(_Strict):
    cell: Literal["lstm", "gru"]
    units: int = Field(gt=0)
    layers: int = Field(ge=1, le=4)
    bidirectional: bool


class AttentionArchitecture(_Strict):
    dim: int = Field(gt=0)
    heads: int = Field(ge=1)
    depth: int = Field(ge=1, le=12)
    mlp_ratio: int = Field(ge=1)
    stem_filters: list[int] = Field(min_length=1, description="widths of the stem's 3×3 conv-BN-ReLU layers")
    stem_strides: list[int] = Field(min_length=1, description="the stride of each stem convolution (1 to 4)")

    @model_validator(mode="after")
    def _consistent(self) -> "AttentionArchitecture":
        if self.dim % self.heads:
            raise ValueError(f"dim={self.dim} must be divisible by heads={self.heads}")
        if len(self.stem_filters) != len(self.stem_strides) or not all(1 <= s <= 4 for s in self.stem_strides):
            raise ValueError(f"stem_strides={self.stem_strides} must hold one stride from 1 to 4 for each of "
                             f"stem_filters={self.stem_filters}")
        if min(self.stem_filters) < 1:
            raise ValueError(f"stem_filters={self.stem_filters} must all be at least 1")
        return self


class ModelTrainParams(_Strict):
    """Optimisation settings shared by every model family."""

    optimizer: Literal["adam", "sgd"]
    learning_rate: float = Field(gt=0.0, le=10.0)
    momentum: float = Field(ge=0.0, lt=1.0, description="SGD only")
    lr_schedule: Literal["constant", "cosine"]
    warmup_epochs: int = Field(ge=0)
    epochs: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    dropout: float = Field(ge=0.0, lt=1.0)
    l2: float = Field(ge=0.0)
    label_smoothing: float = Field(ge=0.0, lt=1.0)
    early_stopping_patience: int = Field(ge=0, description="0 turns early stopping off")
    jit_compile: bool
    precision: Literal["float32", "mixed_bfloat16", "auto"] = Field(
        default="float32", description="auto: bfloat16 compute where the CPU has AMX-BF16, float16 on a GPU")
    ema_momentum: float = Field(default=0.0, ge=0.0, lt=1.0,
                                description="exponential moving average of the weights, used after fit; 0 = off")
    augment: AugmentParams


class CnnTrainParams(ModelTrainParams):
    architecture: CnnArchitecture


class RnnTrainParams(ModelTrainParams):
    architecture: RnnArchitecture


class AttentionTrainParams(ModelTrainParams):
    architecture: AttentionArchitecture


class TrainParams(_Strict):
    """One section per model family, plus what they share."""

    seed: int = Field(ge=0)
    deterministic: bool
    strategy: Literal["default", "mirrored", "multi_worker"] = Field(
        description="tf.distribute strategy; batch_size is per replica and learning_rate scales with replicas")
    memory_budget_mb: float = Field(ge=0.0, description="train + validation images larger than this stream from "
                                                        "the shards; 0 always streams")
    cnn: CnnTrainParams
    rnn: RnnTrainParams
    attention: AttentionTrainParams


class CrossvalParams(_Strict):
    """k-fold cross-validation of the official training set, off unless requested."""

    enabled: bool
    folds: int = Field(ge=2, le=20)
    models: list[Literal["cnn", "rnn", "attention"]] = Field(min_length=1)
    seed: int = Field(ge=0)
    epochs: int = Field(ge=0, description="epochs per fold; 0 uses each model's own train epochs")


TtaMode = Literal["none", "mirror", "mirror_translate"]


class EvaluateParams(_Strict):
    """Test-set evaluation, its uncertainty and the figures it draws."""

    batch_size: int = Field(ge=1)
    bootstrap_resamples: int = Field(ge=100, le=100_000)
    confidence_level: float = Field(gt=0.5, lt=1.0)
    calibration_bins: int = Field(ge=2, le=100)
    seed: int = Field(ge=0)
    explain_per_class: int = Field(ge=1, le=10, description="test images per class in the interpretability figures")
    mistakes_shown: int = Field(ge=1, le=64)
    test_time_augmentation: dict[Literal["cnn", "rnn", "attention"], TtaMode] = Field(
        default_factory=dict, description="per model: the views whose probabilities are averaged; missing = none")


class ExportParams(_Strict):
    """The SavedModel export for TensorFlow Serving and `imgpipe predict`."""

    version: int = Field(ge=1, description="the <model>/<version>/ folder TensorFlow Serving loads")
    tolerance: float = Field(ge=0.0, le=0.01, description="largest allowed probability difference from evaluate")


class ReportParams(_Strict):
    title: str = Field(min_length=1)
    significance_level: float = Field(gt=0.0, lt=0.5)


class Params(_Strict):
    """The whole of ``params.yaml``: one section per stage."""

    preprocess: PreprocessParams
    split: SplitParams
    train: TrainParams
    crossval: CrossvalParams
    evaluate: EvaluateParams
    export: ExportParams
    report: ReportParams

    @model_validator(mode="after")
    def _image_size_fits_every_model(self) -> "Params":
        height, width = self.preprocess.image_size
        for model_name in MODEL_NAMES:
            if height and (problem := input_size_problem(
                    model_name, getattr(self.train, model_name).architecture.model_dump(), height, width)):
                raise ValueError(f"preprocess.image_size={self.preprocess.image_size}: {problem} "
                                 f"(train.{model_name}.architecture)")
        return self


def _describe(error: dict[str, Any], source: Path) -> str:
    key = ".".join(str(part) for part in error["loc"]) or "(top level)"
    if error["type"] == "value_error" and isinstance(error.get("input"), dict):
        # A rule across several keys of one section: the message names the keys and values itself.
        return f"{source}: section '{key}': {error['msg'].removeprefix('Value error, ')}."
    if error["type"] == "missing":
        return f"{source}: key '{key}' is missing."
    if error["type"] == "extra_forbidden":
        return f"{source}: key '{key}' is not a known parameter (misspelled?)."
    return f"{source}: key '{key}' has value {error.get('input')!r}; {error['msg']}."


def validate_params(raw: dict[str, Any], source: Path) -> Params:
    """Check a parsed ``params.yaml`` against the schema; raise one readable ParamsError."""
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        messages = [_describe(err, source) for err in exc.errors()]
        raise ParamsError(" ".join(messages)) from None


def load_params(path: Path) -> Params:
    """Read and validate ``params.yaml``."""
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ParamsError(f"{path}: parameter file not found; expected the project's params.yaml.") from None
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML ({exc}).") from None
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: expected a mapping of stage sections, found {type(raw).__name__}.")
    return validate_params(raw, path)


def stage_parameters(params: Params, stage: str, model_name: str | None = None) -> dict[str, Any]:
    """The flat Papermill parameters of one stage (and model), exactly the keys it declares."""
    if stage in ("train", "evaluate", "crossval", "export") and model_name not in MODEL_NAMES:
        raise ParamsError(f"unknown model name {model_name!r}; expected one of {', '.join(MODEL_NAMES)}.")
    if stage == "train":
        section = getattr(params.train, model_name).model_dump()
        return {"model_name": model_name, "seed": params.train.seed,
                "deterministic": params.train.deterministic, "strategy": params.train.strategy,
                "memory_budget_mb": params.train.memory_budget_mb, **section}
    if stage == "crossval":
        return {"model_name": model_name, "enabled": params.crossval.enabled and model_name in params.crossval.models,
                "folds": params.crossval.folds, "seed": params.crossval.seed,
                "settings": getattr(params.train, model_name).model_dump()
                | ({"epochs": params.crossval.epochs} if params.crossval.epochs else {})}
    tta = {"test_time_augmentation": params.evaluate.test_time_augmentation.get(model_name, "none")}
    if stage == "evaluate":
        return {"model_name": model_name, **params.evaluate.model_dump(exclude={"test_time_augmentation"}), **tta}
    if stage == "export":
        return {"model_name": model_name, **params.export.model_dump(), **tta}
    if stage == "report":
        return {"model_names": list(MODEL_NAMES), **params.report.model_dump()}
    section = getattr(params, stage, None)
    if section is None:
        raise ParamsError(f"unknown stage {stage!r}.")
    return section.model_dump()
