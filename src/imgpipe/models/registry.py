"""The model families: one entry per family, found by scanning ``imgpipe.models.families``.

A family is one module in that package defining ``FAMILY``: its name, the schema of its
``train.<name>.architecture`` section, its Keras builder, the smallest image it can read
and the interpretability maps it supports. Config, the model builder, interpretation, the
benchmark and the report all read this registry; adding a family is adding a module here,
its section in ``params.yaml`` and its name in ``dvc.yaml``'s ``models`` list.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from pydantic import BaseModel, ConfigDict

from imgpipe.models import families

Builder = Callable[..., Any]
"""``build(input_shape, num_classes, mean, std, architecture, dropout, l2) -> keras.Model``."""

INTERPRETATIONS = ("saliency", "grad_cam", "attention")


class StrictSchema(BaseModel):
    """A params.yaml section: unknown keys are errors and the values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class Family:
    """What the pipeline knows about one model family."""

    name: str
    rank: int                                   # where the family appears in tables (lowest first)
    description: str                            # one line for the report and the docs
    architecture: type[BaseModel]               # schema of train.<name>.architecture
    build: Builder                              # imports Keras only when called
    minimum_side: Callable[[Any], int]          # shortest image side the architecture can read
    downsampling: Callable[[Any], str]          # what in the architecture sets that minimum (for messages)
    interpretations: tuple[str, ...] = ("saliency",)

    def __post_init__(self) -> None:
        unknown = set(self.interpretations) - set(INTERPRETATIONS)
        if unknown:
            raise ValueError(f"family {self.name!r}: unknown interpretations {sorted(unknown)}; "
                             f"expected some of {', '.join(INTERPRETATIONS)}.")

    def input_size_problem(self, architecture: Any, height: int, width: int) -> str | None:
        """Why a ``height``×``width`` image is too small for this architecture, or None when it fits."""
        needed = self.minimum_side(architecture)
        if min(height, width) >= needed:
            return None
        return (f"{height}×{width} images are too small for the {self.name} model: its "
                f"{self.downsampling(architecture)} need at least {needed} pixels per side")


@cache
def all_families() -> tuple[Family, ...]:
    """Every registered family, in table order."""
    found = [importlib.import_module(f"{families.__name__}.{module.name}").FAMILY
             for module in pkgutil.iter_modules(families.__path__) if not module.name.startswith("_")]
    return tuple(sorted(found, key=lambda family: (family.rank, family.name)))


def family_names() -> tuple[str, ...]:
    """The registered family names, in table order."""
    return tuple(family.name for family in all_families())


def family(name: str) -> Family:
    """The family called ``name``; a ValueError naming the known ones otherwise."""
    for candidate in all_families():
        if candidate.name == name:
            return candidate
    raise ValueError(f"unknown model name {name!r}; expected one of {', '.join(family_names())}.")


def names_with(interpretation: str, names: Sequence[str] | None = None) -> tuple[str, ...]:
    """The families (of ``names``, default all) that support an interpretability map."""
    return tuple(item.name for item in all_families()
                 if interpretation in item.interpretations and (names is None or item.name in names))
