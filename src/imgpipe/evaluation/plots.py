"""Seaborn figures shared by the evaluate and report stages."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

sns.set_theme(context="notebook", style="whitegrid")


def confusion_heatmap(confusion: pd.DataFrame, title: str, ax: plt.Axes | None = None) -> plt.Figure:
    """Row-normalized confusion matrix: each cell is the percentage of the true class (the diagonal is recall)."""
    percent = 100 * confusion.div(confusion.sum(axis=1).clip(lower=1), axis=0)
    if ax is None:
        _, ax = plt.subplots(figsize=(8.5, 7.5))
    labels = percent.map(lambda value: f"{value:.0f}" if value >= 0.5 else "")
    sns.heatmap(percent, annot=labels, fmt="", cmap="Blues", vmin=0, vmax=100, square=True, linewidths=0.5,
                cbar_kws={"label": "% of the true class", "shrink": 0.8}, annot_kws={"size": 11}, ax=ax)
    ax.set(title=title, xlabel="predicted class", ylabel="true class")
    ax.tick_params(axis="x", labelrotation=40, labelsize=10)
    ax.tick_params(axis="y", labelrotation=0, labelsize=10)
    plt.setp(ax.get_xticklabels(), ha="right", rotation_mode="anchor")
    ax.figure.tight_layout()
    return ax.figure


def confusion_grid(confusions: dict[str, pd.DataFrame]) -> plt.Figure:
    """The normalized confusion matrices of several models, one under the other (readable at page width)."""
    fig, axes = plt.subplots(len(confusions), 1, figsize=(8.5, 7.5 * len(confusions)), squeeze=False)
    for ax, (name, confusion) in zip(axes[:, 0], confusions.items(), strict=True):
        confusion_heatmap(confusion, f"{name}: % of each true class predicted as each class", ax=ax)
    fig.tight_layout()
    return fig


def sample_grid(images: np.ndarray, labels: np.ndarray, class_names: tuple[str, ...], per_class: int = 6,
                seed: int = 0) -> plt.Figure:
    """A few random images of every class, one row per class."""
    rng = np.random.default_rng(seed)
    fig, axes = plt.subplots(len(class_names), per_class, figsize=(per_class * 1.1, len(class_names) * 1.15))
    for label, row in enumerate(np.atleast_2d(axes)):
        members = np.flatnonzero(labels == label)
        chosen = rng.choice(members, size=min(per_class, len(members)), replace=False) if len(members) else []
        for ax, index in zip(row, list(chosen) + [None] * per_class):
            ax.axis("off")
            if index is not None:
                _show_image(ax, images[index])
        row[0].set_title(class_names[label], fontsize=8, loc="left")
    fig.suptitle("Random samples per class")
    fig.tight_layout()
    return fig


METRIC_LABELS = {"accuracy": "accuracy", "precision_macro": "precision (macro)", "recall_macro": "recall (macro)",
                 "f1_macro": "F1 (macro)"}


def metric_intervals(summary: pd.DataFrame, metrics: list[str], level: float = 0.95) -> plt.Figure:
    """Each model's test metrics as a point with its bootstrap confidence interval.

    ``summary`` has a ``model`` column, each metric, and ``<metric>_ci`` (low, high) pairs. Points
    and intervals carry no zero baseline, so the axis spans the data without exaggerating a bar."""
    fig, ax = plt.subplots(figsize=(9, 1.0 + 0.9 * len(metrics)))
    palette = model_colours(list(summary["model"]))
    offsets = np.linspace(-0.22, 0.22, len(summary)) if len(summary) > 1 else np.zeros(1)
    for offset, (_, row) in zip(offsets, summary.iterrows(), strict=True):
        values = np.array([row[key] for key in metrics]) * 100
        lows = np.array([row[f"{key}_ci"][0] for key in metrics]) * 100
        highs = np.array([row[f"{key}_ci"][1] for key in metrics]) * 100
        positions = np.arange(len(metrics)) + offset
        ax.errorbar(values, positions, xerr=[values - lows, highs - values], fmt="o", capsize=4, markersize=6,
                    color=palette[row["model"]], label=row["model"])
    ax.set_yticks(np.arange(len(metrics)), [METRIC_LABELS.get(key, key) for key in metrics])
    ax.invert_yaxis()
    ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda value, _: f"{value:.1f}%"))
    ax.set(xlabel=f"test-set score, with {level:.0%} bootstrap confidence interval", ylabel="",
           title="Test-set metrics by model")
    ax.legend(title="model", loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    return fig


def model_colours(model_names: list[str]) -> dict[str, tuple[float, float, float]]:
    """One fixed colour per model, the same in every figure."""
    return dict(zip(model_names, sns.color_palette("colorblind", len(model_names)), strict=True))


def learning_curves(history: pd.DataFrame) -> plt.Figure:
    """Loss and accuracy per epoch; ``history`` has columns model, epoch, part, loss, accuracy."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    palette = model_colours(list(dict.fromkeys(history["model"])))
    for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
        sns.lineplot(history, x="epoch", y=metric, hue="model", style="part", marker="o", palette=palette, ax=ax,
                     legend=metric == "accuracy")
        ax.set(title=f"{metric.capitalize()} per epoch", xlabel="epoch (from 1)", ylabel=metric)
        ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
    axes[1].legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    fig.tight_layout()
    return fig


def save_figure(figure: plt.Figure, path: Path) -> None:
    """Save a figure as PNG at a readable resolution."""
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110, bbox_inches="tight")


def reliability_diagram(bins: dict[str, pd.DataFrame]) -> plt.Figure:
    """Accuracy against confidence per bin for each model; the diagonal is perfect calibration."""
    fig, axes = plt.subplots(1, len(bins), figsize=(4.2 * len(bins), 4.2), squeeze=False)
    for ax, (name, table) in zip(axes[0], bins.items(), strict=True):
        filled = table.dropna(subset=["accuracy"])
        centers = (filled["lower_edge"] + filled["upper_edge"]) / 2
        ax.bar(centers, filled["accuracy"], width=1 / len(table), edgecolor="white", label="accuracy")
        ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
        ax.plot(filled["confidence"], filled["accuracy"], marker="o", color="black", linewidth=1, label="observed")
        ax.set(xlim=(0, 1), ylim=(0, 1), title=name, xlabel="confidence of the top class", ylabel="accuracy")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.suptitle("Reliability diagrams (test set)")
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), frameon=False, fontsize=9)   # off the data
    return fig


def image_gallery(images: np.ndarray, captions: list[str], title: str, columns: int = 8,
                  legend: str = "") -> plt.Figure:
    """Images in a grid with a caption above each (``legend`` explains the captions, under the title)."""
    rows = max(1, -(-len(images) // columns))
    lines = max((caption.count("\n") + 1 for caption in captions), default=1)
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 1.6, rows * (1.6 + 0.3 * lines) + 0.6),
                             squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, image, caption in zip(axes.ravel(), images, captions):
        _show_image(ax, image)
        ax.set_title(caption, fontsize=8, linespacing=1.15)
    fig.suptitle(f"{title}\n{legend}" if legend else title, fontsize=11)
    fig.tight_layout(h_pad=1.2)
    return fig


def explanation_grid(images: np.ndarray, captions: list[str], maps: dict[str, np.ndarray]) -> plt.Figure:
    """One row per image: the image, then each named heat map overlaid on it."""
    columns = 1 + len(maps)
    fig, axes = plt.subplots(len(images), columns, figsize=(columns * 1.8, len(images) * 1.9), squeeze=False)
    for row, (image, caption) in enumerate(zip(images, captions, strict=True)):
        _show_image(axes[row][0], image)
        axes[row][0].set_title(caption, fontsize=7)
        for column, (name, values) in enumerate(maps.items(), start=1):
            ax = axes[row][column]
            _show_image(ax, image, alpha=0.6)
            ax.imshow(values[row], cmap="inferno", alpha=0.55, vmin=0, vmax=1)
            ax.set_title(name if row == 0 else "", fontsize=8)
    for ax in axes.ravel():
        ax.axis("off")
    fig.tight_layout()
    return fig


def _show_image(ax: plt.Axes, image: np.ndarray, alpha: float = 1.0) -> None:
    if image.shape[-1] == 1:
        ax.imshow(image[..., 0], cmap="gray_r", alpha=alpha)
    else:
        ax.imshow(image.astype(np.uint8), alpha=alpha)
