"""The typed schema of ``params.yaml`` and helpers to read one stage's parameters.

Every stage validates the whole file before doing any work, so a misspelled key or an
out-of-range value stops the run with one message naming the key, the value and what
is allowed, instead of a TensorFlow traceback minutes later.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, Field, SerializeAsAny, ValidationError, create_model, model_validator

from imgpipe.models.registry import StrictSchema, family, family_names


SchemaT = TypeVar("SchemaT", bound=BaseModel)


class ParamsError(ValueError):
    """``params.yaml`` is missing, unreadable or holds an invalid value."""


_Strict = StrictSchema


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


class ModelTrainParams(_Strict):
    """Optimisation settings shared by every model family; ``architecture`` is the family's own schema."""

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
        default="float32", description="auto: bfloat16 compute where the CPU has AMX-BF16 (or is an AMD one with AVX512_BF16), float16 on a GPU")
    ema_momentum: float = Field(default=0.0, ge=0.0, lt=1.0,
                                description="exponential moving average of the weights, used after fit; 0 = off")
    augment: AugmentParams
    architecture: SerializeAsAny[StrictSchema]


@cache
def model_train_schema(model_name: str) -> type[ModelTrainParams]:
    """The schema of ``train.<model_name>``: the shared settings plus the family's architecture."""
    entry = family(model_name)
    return create_model(f"{entry.name.capitalize()}TrainParams", __base__=ModelTrainParams,
                        architecture=(entry.architecture, ...))


STRATEGIES = ("default", "mirrored", "multi_worker")


class TrainSharedParams(_Strict):
    """What every family's training shares."""

    seed: int = Field(ge=0)
    deterministic: bool
    strategy: Literal[STRATEGIES] = Field(  # type: ignore[valid-type]
        description="tf.distribute strategy; batch_size is per replica and learning_rate scales with replicas")
    memory_budget_mb: float = Field(ge=0.0, description="train + validation images larger than this stream from "
                                                        "the shards; 0 always streams")


TrainParams = create_model(
    "TrainParams", __base__=TrainSharedParams, __doc__="One section per model family, plus what they share.",
    **{name: (model_train_schema(name), ...) for name in family_names()})


class TrainStageParams(TrainSharedParams):
    """What one train stage reads: the shared settings and its own family's section."""

    model_name: Literal[family_names()]  # type: ignore[valid-type]
    model: SerializeAsAny[ModelTrainParams]

    @model_validator(mode="before")
    @classmethod
    def _family_schema(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("model"), dict) and data.get("model_name") in family_names():
            try:
                data = {**data, "model": model_train_schema(data["model_name"]).model_validate(data["model"])}
            except ValidationError as error:          # the family's schema: report its keys under model.
                raise ValidationError.from_exception_data(cls.__name__, [
                    {"type": item["type"], "loc": ("model", *item["loc"]), "input": item["input"],
                     **({"ctx": item["ctx"]} if "ctx" in item else {})} for item in error.errors()]) from None
        return data

    @classmethod
    def select(cls, train: BaseModel, model_name: str) -> "TrainStageParams":
        """The shared settings of the whole ``train`` section with the section of ``model_name``."""
        shared = {key: getattr(train, key) for key in TrainSharedParams.model_fields}
        return cls(**shared, model_name=model_name, model=getattr(train, model_name))


class CrossvalParams(_Strict):
    """k-fold cross-validation of the official training set, off unless requested."""

    enabled: bool
    folds: int = Field(ge=2, le=20)
    models: list[Literal[family_names()]] = Field(min_length=1)  # type: ignore[valid-type]
    seed: int = Field(ge=0)
    epochs: int = Field(ge=0, description="epochs per fold; 0 uses each model's own train epochs")


class CrossvalStageParams(_Strict):
    """What one crossval stage reads: the fold settings and the family's own training settings."""

    folds: int
    seed: int
    epochs: int
    train: TrainStageParams

    def fold_training(self) -> TrainStageParams:
        """The training settings of every fold: the train stage's, with ``crossval.epochs`` when it is set."""
        if not self.epochs:
            return self.train
        return self.train.model_copy(update={"model": self.train.model.model_copy(update={"epochs": self.epochs})})


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
    test_time_augmentation: dict[Literal[family_names()], TtaMode] = Field(  # type: ignore[valid-type]
        default_factory=dict, description="per model: the views whose probabilities are averaged; missing = none")


class ExportParams(_Strict):
    """The SavedModel export for TensorFlow Serving and `imgpipe predict`."""

    version: int = Field(ge=1, description="the <model>/<version>/ folder TensorFlow Serving loads")
    tolerance: float = Field(ge=0.0, le=0.01, description="largest allowed probability difference from evaluate")


class ReportParams(_Strict):
    title: str = Field(min_length=1)
    significance_level: float = Field(gt=0.0, lt=0.5)


class EvaluateStageParams(EvaluateParams):
    """What one evaluate stage reads: the evaluate section, for one model (its own test-time augmentation)."""

    model_name: Literal[family_names()]  # type: ignore[valid-type]
    test_time_augmentation: TtaMode = "none"  # type: ignore[assignment]

    @classmethod
    def select(cls, evaluate: EvaluateParams, model_name: str) -> "EvaluateStageParams":
        """The evaluate section with ``model_name``'s test-time augmentation."""
        return cls(**evaluate.model_dump(exclude={"test_time_augmentation"}), model_name=model_name,
                   test_time_augmentation=evaluate.test_time_augmentation.get(model_name, "none"))


class ExportStageParams(ExportParams):
    """What one export stage reads: the export section, for one model, and the test-time augmentation it embeds."""

    model_name: Literal[family_names()]  # type: ignore[valid-type]
    test_time_augmentation: TtaMode = "none"


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
        for model_name in family_names():
            if height and (problem := family(model_name).input_size_problem(
                    getattr(self.train, model_name).architecture, height, width)):
                raise ValueError(f"preprocess.image_size={self.preprocess.image_size}: {problem} "
                                 f"(train.{model_name}.architecture)")
        return self


def _describe(error: dict[str, Any], source: str | Path) -> str:
    key = ".".join(str(part) for part in error["loc"]) or "(top level)"
    if error["type"] == "value_error" and isinstance(error.get("input"), dict):
        # A rule across several keys of one section: the message names the keys and values itself.
        return f"{source}: section '{key}': {error['msg'].removeprefix('Value error, ')}."
    if error["type"] == "missing":
        return f"{source}: key '{key}' is missing."
    if error["type"] == "extra_forbidden":
        return f"{source}: key '{key}' is not a known parameter (misspelled?)."
    return f"{source}: key '{key}' has value {error.get('input')!r}; {error['msg']}."


def validate_section(schema: type[SchemaT], raw: Any, source: str | Path) -> SchemaT:
    """Check ``raw`` against ``schema``; raise one readable ParamsError naming every bad key of ``source``."""
    try:
        return schema.model_validate(raw)
    except ValidationError as exc:
        raise ParamsError(" ".join(_describe(err, source) for err in exc.errors())) from None


def validate_params(raw: dict[str, Any], source: Path) -> Params:
    """Check a parsed ``params.yaml`` against the schema; raise one readable ParamsError."""
    return validate_section(Params, raw, source)


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
