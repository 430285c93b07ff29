"""The pipeline's stage graph, read from DVC and drawn as a picture (no network, no Graphviz)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import networkx as nx

STAGE_COLOURS = {"data": "#e8e8e8", "preprocess": "#d6e9f8", "split": "#d6e9f8", "train": "#fde2c8",
                 "crossval": "#f3f3f3", "evaluate": "#d9f0d3", "export": "#e8dff5", "report": "#fff2b3"}


def stage_graph(root: Path) -> nx.DiGraph:
    """Stages (and ``.dvc`` files) as nodes, an edge from each stage to every stage that reads its outputs."""
    from dvc.repo import Repo                       # DVC loads only for the picture

    with Repo(str(root)) as repo:
        dvc_graph = repo.index.graph
        graph = nx.DiGraph()
        graph.add_nodes_from(stage.addressing for stage in dvc_graph.nodes)
        graph.add_edges_from((upstream.addressing, stage.addressing) for stage, upstream in dvc_graph.edges)
    return graph


def _kind(node: str) -> str:
    return "data" if node.endswith(".dvc") else node.split("@")[0]


COLUMN = {"data": 0, "preprocess": 1, "split": 2, "train": 3, "crossval": 3, "evaluate": 4, "export": 5, "report": 6}
LOWER_ROWS = ("crossval",)          # per-model stages drawn in a second band, below the main one


def layout(graph: nx.DiGraph) -> dict[str, tuple[float, float]]:
    """x: the stage's step (kinds not listed follow their inputs); y: one row per model, shared stages centred."""
    items = sorted({node.partition("@")[2] for node in graph if "@" in node},
                   key=lambda item: min(list(graph).index(node) for node in graph if node.endswith(f"@{item}")))
    centre = (len(items) - 1) / 2
    where: dict[str, tuple[float, float]] = {}
    for node in nx.topological_sort(graph):
        kind, _, item = node.partition("@")
        fallback = max((where[source][0] + 1 for source in graph.predecessors(node)), default=0)
        x = COLUMN.get(_kind(node), fallback)
        y = -centre if not item else -(items.index(item) + (len(items) if kind in LOWER_ROWS else 0))
        where[node] = (float(x), float(y))
    return where


def draw_stage_graph(graph: nx.DiGraph) -> plt.Figure:
    """Left to right in the order the stages run, one row per model, an arrow per direct dependency
    (a dependency implied by a longer path is left out)."""
    graph = nx.transitive_reduction(graph)
    where = layout(graph)
    width = max(x for x, _ in where.values()) + 1
    rows = -min(y for _, y in where.values()) + 1
    fig, ax = plt.subplots(figsize=(1.9 * width + 0.5, 0.7 * rows + 1.0))
    for source, target in graph.edges:
        ax.annotate("", xy=where[target], xytext=where[source],
                    arrowprops={"arrowstyle": "-|>", "color": "#888888", "shrinkA": 34, "shrinkB": 34,
                                "linewidth": 0.9, "connectionstyle": "arc3,rad=0.0"})
    for node, (x, y) in where.items():
        ax.text(x, y, node, ha="center", va="center", fontsize=9, zorder=3,
                bbox={"boxstyle": "round,pad=0.35", "facecolor": STAGE_COLOURS.get(_kind(node), "#ffffff"),
                      "edgecolor": "#666666", "linewidth": 0.8})
    ax.set_xlim(-0.6, width - 0.4)
    ax.set_ylim(-rows + 0.4, 0.6)
    ax.axis("off")
    ax.set_title("The pipeline: each arrow feeds a stage's outputs to the next (dvc dag)", fontsize=10)
    fig.tight_layout()
    return fig
