"""Seaborn figures shared by the evaluate and report stages."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

sns.set_theme(context="notebook", style="whitegrid")


def confusion_heatmap(confusion: pd.DataFrame, title: str, ax: plt.Axes | None = None) -> plt.Figure:
    """Row-normalized confusion matrix (recall per true class) with counts' share in each cell."""
    normalized = confusion.div(confusion.sum(axis=1).clip(lower=1), axis=0)
    if ax is None:
        _, ax = plt.subplots(figsize=(7.5, 6.5))
    sns.heatmap(normalized, annot=True, fmt=".2f", cmap="Blues", vmin=0, vmax=1, square=True,
                cbar_kws={"label": "share of true class"}, annot_kws={"size": 7}, ax=ax)
    ax.set(title=title, xlabel="predicted class", ylabel="true class")
    ax.tick_params(axis="x", labelrotation=45)
    ax.figure.tight_layout()
    return ax.figure


def confusion_grid(confusions: dict[str, pd.DataFrame]) -> plt.Figure:
    """The normalized confusion matrices of several models side by side."""
    fig, axes = plt.subplots(1, len(confusions), figsize=(6.5 * len(confusions), 6))
    for ax, (name, confusion) in zip(np.atleast_1d(axes), confusions.items(), strict=True):
        confusion_heatmap(confusion, name, ax=ax)
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


def metric_bars(summary: pd.DataFrame, metrics: list[str]) -> plt.Figure:
    """Grouped bars of test metrics per model; ``summary`` has a ``model`` column."""
    long = summary.melt(id_vars="model", value_vars=metrics, var_name="metric", value_name="value")
    fig, ax = plt.subplots(figsize=(8, 4))
    sns.barplot(long, x="metric", y="value", hue="model", ax=ax)
    low = max(0.0, float(long["value"].min()) - 0.05)
    ax.set(ylim=(low, 1.0), title="Test-set metrics by model", xlabel="", ylabel="score")
    for container in ax.containers:
        ax.bar_label(container, fmt="%.3f", fontsize=7, padding=2)
    ax.legend(title="model", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig


def learning_curves(history: pd.DataFrame) -> plt.Figure:
    """Loss and accuracy per epoch; ``history`` has columns model, epoch, part, loss, accuracy."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
        sns.lineplot(history, x="epoch", y=metric, hue="model", style="part", marker="o", ax=ax)
        ax.set(title=f"{metric.capitalize()} per epoch", xlabel="epoch", ylabel=metric)
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
    axes[0][0].legend(loc="upper left", fontsize=8)
    fig.suptitle("Reliability diagrams (test set)")
    fig.tight_layout()
    return fig


def image_gallery(images: np.ndarray, captions: list[str], title: str, columns: int = 8) -> plt.Figure:
    """Images in a grid with a caption under each."""
    rows = max(1, -(-len(images) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 1.5, rows * 1.9), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, image, caption in zip(axes.ravel(), images, captions):
        _show_image(ax, image)
        ax.set_title(caption, fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def explanation_grid(images: np.ndarray, captions: list[str], maps: dict[str, np.ndarray]) -> plt.Figure:
    """One row per image: the image, then each named heat map overlaid on it."""
    columns = 1 + len(maps)
    fig, axes = plt.subplots(len(images), columns, figsize=(columns * 1.7, len(images) * 1.8), squeeze=False)
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
