"""The ``imgpipe`` command: run pipeline stages, summarize them, predict with an exported model, benchmark."""

from __future__ import annotations

import argparse
import errno
import importlib
import json
import logging
import os
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

from imgpipe import __version__
from imgpipe.artifacts.files import load_json, remove_leftovers, save_json, save_text
from imgpipe.artifacts.paths import ProjectPaths, project_paths
from imgpipe.config.schema import ParamsError, load_params
from imgpipe.data.fetch import DataFetchError, fetch_fashion_mnist
from imgpipe.evaluation.revisions import CompareError
from imgpipe.models.registry import family_names
from imgpipe.pipeline import stagelog
from imgpipe.pipeline.runner import StageFailed, run_stage
from imgpipe.pipeline.stages import STAGES, stage_names
from imgpipe.serving.trust import UntrustedModelError

LOGGER = logging.getLogger("imgpipe")
DESCRIPTION = ("Reproducible image classification: run the pipeline's stages (dvc repro calls `imgpipe run`), "
               "summarize them, label images with an exported model, and benchmark.")
PER_MODEL_STAGES = tuple(entry.name for entry in STAGES if entry.per_model)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="imgpipe", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"imgpipe {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help=f"full log: every stage's kernel output and debug lines (or set {stagelog.VERBOSE_ENV}=1)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("fetch-data", help="fill data/raw with the verified Fashion-MNIST files")
    commands.add_parser("check-params", help="validate params.yaml and exit")
    run = commands.add_parser("run", help="execute one stage notebook with Papermill and publish it as HTML")
    run.add_argument("stage", choices=stage_names())
    run.add_argument("model", nargs="?", choices=family_names(),
                     help=f"model family, for the {', '.join(PER_MODEL_STAGES)} stages")
    run.add_argument("-v", "--verbose", action="store_true", dest="stage_verbose", help="full log of the stage's kernel")
    commands.add_parser("summary", help="the last run of every stage: time and key figure")
    predict = commands.add_parser("predict", help="label image files, folders or globs with an exported model")
    predict.add_argument("--model", required=True, choices=family_names(), help="which exported family to use")
    predict.add_argument("--json", action="store_true", help="one JSON object per line instead of text")
    predict.add_argument("--top", type=int, default=1, metavar="K", help="also show the K most likely classes")
    predict.add_argument("--export-dir", help="folder of version folders (default: exported/<model>)")
    predict.add_argument("--trust-model", action="store_true",
                         help="load a SavedModel from outside exported/ even if its graph holds operations that "
                              "imgpipe's export never uses (file I/O, Python calls); only for models you trust")
    predict.add_argument("--max-pixels", type=int, default=50_000_000,
                         help="images with more pixels are refused unread (decompression bombs)")
    predict.add_argument("inputs", nargs="+", help="image files, folders (recursive) or glob patterns")
    bench = commands.add_parser("bench", help="training speed: naive model.fit against the pipeline, vs sgemm")
    bench.add_argument("--images", type=int, default=12800, help="training images per measurement")
    bench.add_argument("--warmup-images", type=int, default=1280, help="images trained before timing starts")
    bench.add_argument("--output", default="bench/training.json", help="where the JSON results go")
    bench.add_argument("--race-images", type=int, default=0,
                       help="time to accuracy: training images of the split stage to use (0 = all)")
    bench.add_argument("--race-val-images", type=int, default=0, help="time to accuracy: validation images (0 = all)")
    bench.add_argument("--race-output", default="bench/time_to_accuracy.json",
                       help="where the time-to-accuracy JSON goes")
    bench.add_argument("--no-race", action="store_true", help="measure speed only, not time to accuracy")
    bench.add_argument("--race-models", nargs="+", default=None, choices=family_names(), metavar="MODEL",
                       help="time to accuracy: race only these families (default: every family with a peer)")
    prep = commands.add_parser("bench-preprocess", help="decoding speed and peak memory on generated JPEGs")
    prep.add_argument("--images", type=int, default=20000, help="JPEGs to generate and preprocess")
    prep.add_argument("--image-size", type=int, default=64, help="side of the square images they are brought to")
    prep.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts to measure")
    prep.add_argument("--output", default="bench/preprocess.json", help="where the JSON results go")
    stream = commands.add_parser("bench-streaming", help="train on data larger than a memory limit: loaded vs streamed")
    stream.add_argument("--images", type=int, default=120_000, help="random 64×64×3 images to generate (12 KiB each)")
    stream.add_argument("--memory-limit-mb", type=int, default=1100, help="memory cgroup limit of each training run")
    stream.add_argument("--budgets", type=float, nargs="+", default=[4096.0, 64.0],
                        help="train.memory_budget_mb values to run (above the data: in memory; below: streamed)")
    stream.add_argument("--output", default="bench/streaming.json", help="where the JSON results go")
    shapes = commands.add_parser("make-folder-dataset", help="write a folder dataset of shapes to try a folder source")
    shapes.add_argument("folder", help="where the class folders go, e.g. data/raw/shapes")
    shapes.add_argument("--per-class", type=int, default=300, help="images per class")
    shapes.add_argument("--with-broken-files", action="store_true", help="add one broken file of every kind")
    verify = commands.add_parser("verify", help="rerun the committed study from scratch and judge it against the commit")
    verify.add_argument("--keep", action="store_true", help="keep the temporary rerun for inspection")
    compare = commands.add_parser("compare", help="one verdict per model for two runs: identical, consistent or different")
    compare.add_argument("first", nargs="?", default="HEAD", help="git revision, DVC experiment or 'workspace' (HEAD)")
    compare.add_argument("second", nargs="?", default="workspace", help="the same kinds (default: workspace)")
    compare.add_argument("--json", action="store_true", help="print the comparison as JSON instead of a table")
    compare.add_argument("--html", metavar="PATH", help="also write the comparison as an HTML page")
    compare.add_argument("--expect", choices=("identical", "consistent"), default="consistent",
                         help="exit 1 when any model's verdict is worse than this (default: consistent)")
    experiments = commands.add_parser("experiments", help="the baseline and every DVC experiment, one row each")
    experiments.add_argument("--json", action="store_true", help="print the rows as JSON instead of a table")
    return parser


def _compare(first: str, second: str, as_json: bool, html: str | None, expect: str) -> int:
    from imgpipe.evaluation import compare_views
    from imgpipe.evaluation.compare import compare, worse_than
    from imgpipe.evaluation.revisions import resolve_side

    root = project_paths().root
    comparison = compare(resolve_side(root, first), resolve_side(root, second))
    text = json.dumps(comparison.to_dict(), indent=2) if as_json else compare_views.render_text(comparison)
    sys.stdout.write(text + "\n")
    if html:
        save_text(compare_views.render_page(comparison, f"imgpipe compare {first} {second}"), Path(html))
        LOGGER.info("wrote %s", html)
    worse = [m.model for m in comparison.models if worse_than(m.verdict, expect)]
    if worse:
        LOGGER.error("worse than %s: %s", expect, ", ".join(worse))
    return 1 if worse else 0


def _experiments(as_json: bool) -> None:
    from imgpipe.evaluation.experiments import experiment_rows, render_rows

    rows = experiment_rows(project_paths().root)
    sys.stdout.write((json.dumps(rows, indent=2) if as_json else render_rows(rows)) + "\n")


def _verify(keep: bool) -> int:
    from imgpipe.evaluation.compare_views import render_text
    from imgpipe.pipeline.verify import verify

    judgement = verify(project_paths().root, keep)
    notes = [textwrap.fill(note, 100, subsequent_indent="  ") for note in judgement.notes]
    sys.stdout.write(render_text(judgement.comparison) + "\n\n" + "\n".join(notes) + "\n")
    for failure in judgement.failures:
        LOGGER.error("%s", failure)
    verdict = "FAILED" if judgement.failures else "verified"
    LOGGER.info("%s: %d failure(s) against the committed run", verdict, len(judgement.failures))
    return 1 if judgement.failures else 0


def _bench(benchmark_name: str, output: str, *arguments: Any, **options: Any) -> None:
    """Run one benchmark of ``imgpipe.bench``, save its JSON under ``output`` and print its table."""
    module = importlib.import_module(f"imgpipe.bench.{benchmark_name}")   # TensorFlow loads only for these commands
    benchmark = module.run_benchmark(*arguments, **options)
    save_json(benchmark, project_paths().root / output)
    sys.stdout.write(module.markdown_table(benchmark) + "\n")


def _make_folder_dataset(folder: str, per_class: int, with_broken_files: bool) -> None:
    from imgpipe.data import synthetic

    count = synthetic.write_shapes_dataset(Path(folder), per_class)
    broken = synthetic.write_broken_files(Path(folder)) if with_broken_files else {}
    LOGGER.info("wrote %d images and %d broken files under %s", count, len(broken), folder)


def _predict(model: str, inputs: list[str], as_json: bool, export_dir: str | None, top: int, trust_model: bool,
             max_pixels: int) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")         # keep TensorFlow's C++ start-up notes off the output
    from imgpipe.serving.quiet import native_stderr_silenced

    with native_stderr_silenced():
        from imgpipe.serving.predict import run_predict                # TensorFlow loads only for this command

    if top < 1:
        raise ParamsError(f"--top must be 1 or more, got {top}.")
    try:
        own = project_paths().root / "exported"
    except FileNotFoundError:
        own = None
    folder = Path(export_dir) if export_dir else project_paths().export_dir(model)
    return run_predict(inputs, folder, as_json, top=top, trusted_root=own, trust_model=trust_model,
                       max_pixels=max_pixels)


def _run_stage(stage_name: str, model: str | None, verbose: bool) -> None:
    if stage_name in PER_MODEL_STAGES and model is None:
        raise ParamsError(f"stage {stage_name} needs a model: imgpipe run {stage_name} {{{','.join(family_names())}}}.")
    started = time.monotonic()
    paths = project_paths()
    name = f"{stage_name}@{model}" if model else stage_name
    run_stage(paths, stage_name, model, kernel_level=logging.DEBUG if verbose else logging.WARNING)
    LOGGER.info("%s", stagelog.record_stage(paths.root / ".imgpipe" / "stages", name, stage_name,
                                            time.monotonic() - started, _current_figure(paths, name)))
    if stage_name == "report":
        _write_summary(paths)


def _current_figure(paths: ProjectPaths, name: str) -> str:
    """The key figure of stage ``name`` (``stage`` or ``stage@model``) from its metrics file as it is now."""
    stage_name, _, model = name.partition("@")
    metrics = paths.model_metrics(stage_name, model) if model else paths.stage_metrics(stage_name)
    return stagelog.key_figure(stage_name, load_json(metrics) if metrics.is_file() else {})


def _write_summary(paths: ProjectPaths) -> None:
    table = stagelog.summary_table(paths.root / ".imgpipe" / "stages", lambda name: _current_figure(paths, name))
    sys.stdout.write(table + "\n")


def _configure_logging(verbose: bool) -> None:
    """Quiet: our own lines as plain text, warnings with their level; verbose: everything, timestamped."""
    if verbose:
        logging.basicConfig(level=logging.DEBUG, format="%(asctime)s %(name)s %(levelname)s %(message)s")
        return
    handler = logging.StreamHandler()
    handler.setFormatter(_QuietFormatter())
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    for noisy in ("papermill", "nbclient", "tensorflow", "absl", "matplotlib", "h5py"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("traitlets").setLevel(logging.ERROR)       # nbconvert's notes on the published HTML


class _QuietFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = super().format(record)
        return message if record.levelno == logging.INFO else f"{record.levelname.lower()}: {message}"


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = _parser().parse_args(argv)
    verbose = args.verbose or getattr(args, "stage_verbose", False) or os.environ.get(stagelog.VERBOSE_ENV) == "1"
    _configure_logging(verbose)
    try:
        if args.command == "fetch-data":
            paths = project_paths()
            fetch_fashion_mnist(paths.raw_data, paths.root)
        elif args.command == "check-params":
            load_params(project_paths().params)
            LOGGER.info("params.yaml is valid")
        elif args.command == "predict":
            return _predict(args.model, args.inputs, args.json, args.export_dir, args.top, args.trust_model,
                            args.max_pixels)
        elif args.command == "summary":
            _write_summary(project_paths())
        elif args.command == "verify":
            return _verify(args.keep)
        elif args.command == "compare":
            return _compare(args.first, args.second, args.json, args.html, args.expect)
        elif args.command == "experiments":
            _experiments(args.json)
        elif args.command == "bench":
            _bench("training", args.output, project_paths(), args.images, args.warmup_images)
            if not args.no_race:
                _bench("time_to_accuracy", args.race_output, project_paths(), args.race_images, args.race_val_images,
                       models=args.race_models)
        elif args.command == "bench-preprocess":
            _bench("preprocess", args.output, args.images, args.image_size, args.workers)
        elif args.command == "bench-streaming":
            _bench("streaming", args.output, args.images, args.memory_limit_mb, args.budgets)
        elif args.command == "make-folder-dataset":
            _make_folder_dataset(args.folder, args.per_class, args.with_broken_files)
        else:
            _run_stage(args.stage, args.model, verbose)
    except (ParamsError, DataFetchError, StageFailed, FileNotFoundError, UntrustedModelError) as error:
        LOGGER.error("%s", error)
        return 1
    except CompareError as error:
        LOGGER.error("%s", error)
        return 2
    except OSError as error:
        if error.errno != errno.ENOSPC:
            raise
        root = project_paths().root
        removed = remove_leftovers(root)
        LOGGER.error("the disk is full (%s); free space on the disk holding %s and rerun (%d partial files removed).",
                     error, root, len(removed))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
