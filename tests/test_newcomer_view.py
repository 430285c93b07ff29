"""What a newcomer meets first, in units: the stage log at its real level and one summary line per
stage, notebooks run by hand writing to scratch/, predict's notes on unfamiliar images, readable
figures, and a plain command line."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest

matplotlib.use("Agg")

from imgpipe.artifacts.paths import ProjectPaths  # noqa: E402
from imgpipe.evaluation import plots  # noqa: E402
from imgpipe.pipeline import stagelog  # noqa: E402
from imgpipe.serving.predict import unlike_training  # noqa: E402


def test_kernel_log_records_keep_their_level_and_the_rest_waits_for_verbose(caplog: pytest.LogCaptureFixture) -> None:
    sink = stagelog.KernelLog("train@cnn", threshold=logging.INFO)
    caplog.set_level(logging.DEBUG)
    sink.write("INFO:imgpipe.training.train:epoch 1 of 3\nWARNING:imgpipe.da")
    sink.write("ta.split:only 3 images in class 'Bag'\n  second line of it\n")
    sink.write("\x1b[31m2026-01-01 I tensorflow/core/util/port.cc:153] oneDNN custom operations are on\x1b[0m\n")
    sink.write("DEBUG:imgpipe.x:hidden\nERROR:imgpipe.y:last, no newline")
    sink.close()
    seen = [(record.name, record.levelname, record.getMessage()) for record in caplog.records]
    assert seen == [("imgpipe.training.train", "INFO", "epoch 1 of 3"),
                    ("imgpipe.data.split", "WARNING", "only 3 images in class 'Bag'\n  second line of it"),
                    ("imgpipe.y", "ERROR", "last, no newline")]


def test_kernel_log_in_verbose_mode_passes_everything_without_ansi(caplog: pytest.LogCaptureFixture) -> None:
    sink = stagelog.KernelLog("split", threshold=logging.DEBUG)
    caplog.set_level(logging.DEBUG)
    sink.write("\x1b[1mplain output\x1b[0m\nDEBUG:imgpipe.x:shown\n")
    sink.close()
    assert [(record.levelname, record.getMessage()) for record in caplog.records] == [
        ("DEBUG", "plain output"), ("DEBUG", "shown")]


def test_summary_lines_and_table_in_pipeline_order(tmp_path: Path) -> None:
    figure = stagelog.key_figure("evaluate", {"accuracy": 0.9316, "accuracy_ci_low": 0.9269, "accuracy_ci_high": 0.9365})
    assert figure == "test accuracy 93.16% [92.69%, 93.65%]"
    assert stagelog.key_figure("crossval", {}) == "skipped (not requested)"
    line = stagelog.record_stage(tmp_path, "evaluate@cnn", "evaluate", 12.34, figure)
    assert line.startswith("evaluate@cnn") and "12.3 s" in line and figure in line
    stagelog.record_stage(tmp_path, "preprocess", "preprocess", 1.0, "70,000 images kept, 0 dropped")
    table = stagelog.summary_table(tmp_path).splitlines()
    assert table[2].startswith("preprocess") and table[3].startswith("evaluate@cnn")
    assert table[-1].split() == ["total", "13.3", "s"]
    assert "No stage has run" in stagelog.summary_table(tmp_path / "empty")


def test_outputs_of_a_hand_run_notebook_go_to_scratch_seeded_from_the_pipeline(tmp_path: Path) -> None:
    real = tmp_path / "metrics" / "evaluate" / "cnn.json"
    real.parent.mkdir(parents=True)
    real.write_text('{"accuracy": 0.9}')
    os.utime(real, (1_000_000, 1_000_000))
    paths = ProjectPaths(tmp_path, tmp_path / "scratch")
    mirror = paths.model_metrics("evaluate", "cnn")
    assert mirror == tmp_path / "scratch" / "metrics" / "evaluate" / "cnn.json"
    assert mirror.read_text() == '{"accuracy": 0.9}', "a hand run reads the pipeline's result"
    mirror.write_text('{"accuracy": 0.5}')                       # what the notebook writes
    assert paths.model_metrics("evaluate", "cnn").read_text() == '{"accuracy": 0.5}', "its own result is kept"
    assert real.read_text() == '{"accuracy": 0.9}', "the DVC output is untouched"
    real.write_text('{"accuracy": 0.95}')                         # a newer pipeline run wins
    assert paths.model_metrics("evaluate", "cnn").read_text() == '{"accuracy": 0.95}'
    assert paths.evaluation_dir("rnn").parent.is_dir() and not paths.evaluation_dir("rnn").exists()
    assert ProjectPaths(tmp_path).model_metrics("evaluate", "cnn") == real


def test_predict_flags_images_unlike_the_training_data_without_refusing() -> None:
    profile = {"height": 28, "width": 28, "channels": 1, "pixel_mean": [72.9], "pixel_std": [90.0]}
    rng = np.random.default_rng(0)
    alike = rng.integers(0, 150, (28, 28, 1)).astype(np.uint8)
    assert unlike_training(alike, profile) == []
    photo = np.full((480, 640, 3), 230, np.uint8)
    photo[100:380, 200:440] = (200, 40, 40)                        # a red shirt on a white background
    notes = unlike_training(photo, profile)
    assert len(notes) == 3 and "colour" in notes[0] and "640×480" in notes[1] and "brightness" in notes[2]
    assert unlike_training(photo, None) == [], "an export without a profile is not judged"


def test_gallery_captions_do_not_overlap_each_other_or_the_images() -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (16, 28, 28, 1)).astype(np.uint8)
    captions = [f"T-shirt/top → Shirt\n({90 - i}%)" for i in range(16)]
    figure = plots.image_gallery(images, captions, "cnn: most confident mistakes",
                                 legend="each caption: true class → predicted class (confidence)")
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    axes = [ax for ax in figure.axes if ax.images]
    titles = [ax.title.get_window_extent(renderer) for ax in axes]
    pictures = [ax.get_window_extent(renderer) for ax in axes]
    for i, title in enumerate(titles):
        for j, other in enumerate(titles):
            assert i == j or not title.overlaps(other), (captions[i], captions[j])
        for j, picture in enumerate(pictures):
            assert i == j or not title.overlaps(picture), f"caption {i} overlaps image {j}"
    assert figure._suptitle.get_window_extent(renderer).y0 >= max(t.y1 for t in titles) - 1


def test_metric_intervals_draw_each_models_interval() -> None:
    summary = pd.DataFrame({"model": ["cnn", "rnn"], "accuracy": [0.93, 0.91], "accuracy_ci": [(0.925, 0.935), (0.9, 0.92)]})
    figure = plots.metric_intervals(summary, ["accuracy"])
    ax = figure.axes[0]
    assert [text.get_text() for text in ax.get_legend().get_texts()] == ["cnn", "rnn"]
    low, high = ax.get_xlim()
    assert low < 90.0 and high > 93.5, "the axis spans every interval"
    assert len({tuple(line.get_color()) for line in ax.lines if line.get_marker() == "o"}) == 2


def test_confusion_numbers_are_readable() -> None:
    names = [f"class {i}" for i in range(10)]
    confusion = pd.DataFrame(np.eye(10, dtype=int) * 90 + 1, index=names, columns=names)
    figure = plots.confusion_grid({"cnn": confusion, "rnn": confusion})
    width_px = figure.get_figwidth() * figure.dpi
    sizes = [text.get_fontsize() for text in figure.axes[0].texts]
    assert len(sizes) == 100 and min(sizes) * 1280 / max(width_px, 1280) >= 9


def _imgpipe(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "imgpipe", *args], capture_output=True, text=True, check=False)


def test_command_line_has_a_version_and_plain_help() -> None:
    version = _imgpipe("--version")
    assert version.returncode == 0 and version.stdout.startswith("imgpipe ")
    for args in ((), ("run",), ("predict",), ("summary",)):
        shown = _imgpipe(*args, "--help").stdout
        assert "``" not in shown and "usage: imgpipe" in shown
    assert "train, evaluate, crossval, export stages" in " ".join(_imgpipe("run", "--help").stdout.split())
    missing = _imgpipe("run", "train")
    assert missing.returncode == 1 and "needs a model" in missing.stderr
    assert "--top K" in _imgpipe("predict", "--help").stdout


def test_jupyter_save_hook_strips_notebooks_and_refuses_the_published_copies() -> None:
    from imgpipe.pipeline.hygiene import strip_before_save

    content = {"cells": [{"cell_type": "code", "source": "1", "outputs": [{"output_type": "stream", "name": "stdout",
                                                                            "text": "1"}], "execution_count": 3,
                          "metadata": {}}], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    model = {"type": "notebook", "content": content}
    strip_before_save(model, path="notebooks/4-evaluate.ipynb")
    assert content["cells"][0]["outputs"] == []
    with pytest.raises(PermissionError, match="scratch/"):
        strip_before_save({"type": "notebook", "content": content}, path="reports/evaluate-cnn.ipynb")


def test_dvc_plots_colour_each_model_as_the_report_does(project_root: Path) -> None:
    template = json.loads((project_root / ".dvc" / "plots" / "epochs.json").read_text())
    colour = template["encoding"]["color"]
    assert colour["sort"] is None, "models keep dvc.yaml's order, as in the report"
    names = ["cnn", "rnn", "attention"]
    report = {name: matplotlib.colors.to_hex(rgb) for name, rgb in plots.model_colours(names).items()}
    assert dict(zip(names, colour["scale"]["range"])) == report


def test_summary_marks_a_stage_whose_outputs_changed_after_the_timed_run(tmp_path: Path) -> None:
    timed = "validation accuracy 92.52% (epoch 10 of 10)"
    stagelog.record_stage(tmp_path, "train@rnn", "train", 290.1, timed)
    stagelog.record_stage(tmp_path, "train@cnn", "train", 270.5, "validation accuracy 94.08% (epoch 11 of 12)")
    in_place = {"train@rnn": "validation accuracy 92.15% (epoch 10 of 10)",
                "train@cnn": "validation accuracy 94.08% (epoch 11 of 12)"}
    table = stagelog.summary_table(tmp_path, in_place.__getitem__).splitlines()
    rnn_row = next(row for row in table if row.startswith("train@rnn"))
    cnn_row = next(row for row in table if row.startswith("train@cnn"))
    assert rnn_row.endswith(f"{timed} {stagelog.STALE_MARK} now: {in_place['train@rnn']}")
    assert stagelog.STALE_MARK not in cnn_row
    assert table[-1].startswith(stagelog.STALE_MARK) and "dvc repro -f -s" in table[-1]
    unchanged = stagelog.summary_table(tmp_path, lambda name: {**in_place, "train@rnn": timed}[name])
    assert stagelog.STALE_MARK not in unchanged
