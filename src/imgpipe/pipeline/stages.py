"""The stage table: each stage's notebook, whether it runs once per model, the typed parameters it
receives and its title in the report. The runner, the command line, the notebook-sync tool and
the tests read this table; ``dvc.yaml`` names the same stages, in the same order.
"""

from __future__ import annotations

import pprint
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from imgpipe.models.registry import family_names
from imgpipe.config.schema import (
    CrossvalStageParams, EvaluateStageParams, ExportStageParams, Params, ParamsError, PreprocessParams, ReportParams,
    SplitParams, TrainStageParams, validate_section,
)

PARAMETERS_HEADER = "# Parameters: literals only, equal to params.yaml (Papermill injects the stage's values below).\n"


@dataclass(frozen=True)
class Stage:
    """One stage of ``dvc.yaml``: one notebook, one params value, one page."""

    name: str
    notebook: str                                           # file name under notebooks/
    per_model: bool                                         # one run per model family (foreach in dvc.yaml)
    title: str                                              # the page's title in the report's navigation
    schema: type[BaseModel]                                 # the typed parameters of one run
    section: Callable[[Params, str | None], BaseModel]     # picks them out of params.yaml
    skip_reason: Callable[[Params, str | None], str | None] = lambda params, model_name: None
    is_report: bool = False                                 # published as index.html, code hidden

    def page(self, model_name: str | None = None) -> str:
        """File stem of the executed notebook and its HTML page, e.g. ``train-cnn``."""
        return f"{self.name}-{model_name}" if self.per_model else self.name

    def html_name(self, model_name: str | None = None) -> str:
        """The published page: ``index.html`` for the report, ``<page>.html`` for the others."""
        return "index.html" if self.is_report else f"{self.page(model_name)}.html"

    def parameters(self, params: Params, model_name: str | None = None) -> dict[str, Any]:
        """What Papermill injects: the stage's parameters as one plain value, ``params``."""
        if self.per_model and model_name not in family_names():
            raise ParamsError(f"unknown model name {model_name!r}; expected one of {', '.join(family_names())}.")
        return {"params": self.section(params, model_name).model_dump(mode="json")}

    def typed(self, values: dict[str, Any]) -> BaseModel:
        """A notebook's ``params`` turned back into the typed object that ``src`` takes."""
        return validate_section(self.schema, values, f"{self.notebook} params")


def _crossval(params: Params, model_name: str | None) -> CrossvalStageParams:
    section = params.crossval
    return CrossvalStageParams(folds=section.folds, seed=section.seed, epochs=section.epochs,
                               train=TrainStageParams.select(params.train, model_name))


def _crossval_skip_reason(params: Params, model_name: str | None) -> str | None:
    if params.crossval.enabled and model_name in params.crossval.models:
        return None
    return (f"cross-validation of {model_name} was not requested (crossval.enabled and crossval.models "
            "in params.yaml).")


STAGES: tuple[Stage, ...] = (
    Stage("preprocess", "1-preprocess.ipynb", False, "Preprocessing", PreprocessParams,
          lambda params, _: params.preprocess),
    Stage("split", "2-split.ipynb", False, "Split", SplitParams, lambda params, _: params.split),
    Stage("train", "3-train.ipynb", True, "Training", TrainStageParams,
          lambda params, name: TrainStageParams.select(params.train, name)),
    Stage("evaluate", "4-evaluate.ipynb", True, "Evaluation", EvaluateStageParams,
          lambda params, name: EvaluateStageParams.select(params.evaluate, name)),
    Stage("crossval", "5-crossval.ipynb", True, "Cross-validation", CrossvalStageParams, _crossval,
          skip_reason=_crossval_skip_reason),
    Stage("export", "6-export.ipynb", True, "Export", ExportStageParams,
          lambda params, name: ExportStageParams(**dict(params.export), model_name=name,
                                                 test_time_augmentation=params.evaluate.test_time_augmentation.get(
                                                     name, "none"))),
    Stage("report", "7-report.ipynb", False, "Report", ReportParams, lambda params, _: params.report,
          is_report=True),
)


def stage(name: str) -> Stage:
    """The stage called ``name``; a ParamsError naming the known ones otherwise."""
    for candidate in STAGES:
        if candidate.name == name:
            return candidate
    raise ParamsError(f"unknown stage {name!r}; expected one of {', '.join(item.name for item in STAGES)}.")


def typed_params(stage_name: str, values: dict[str, Any]) -> Any:
    """The first cell of every stage notebook: its ``params`` value, validated into its typed object."""
    return stage(stage_name).typed(values)


def stage_names() -> tuple[str, ...]:
    """Every stage, in DAG order."""
    return tuple(item.name for item in STAGES)


def parameters_cell_source(entry: Stage, params: Params) -> str:
    """The source of a notebook's ``parameters`` cell: the defaults of ``params`` (first family for per-model stages)."""
    model_name = family_names()[0] if entry.per_model else None
    values = entry.parameters(params, model_name)["params"]
    return PARAMETERS_HEADER + "params = " + pprint.pformat(values, width=110, sort_dicts=False)


def published_pages(model_names: tuple[str, ...]) -> list[tuple[str, str, str]]:
    """(stage title, model name or '', page file) of every stage page the report links to, in DAG order."""
    return [(entry.title, name or "", entry.html_name(name)) for entry in STAGES if not entry.is_report
            for name in (model_names if entry.per_model else (None,))]
