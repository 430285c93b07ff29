"""Command line: ``imgpipe fetch-data``, ``check-params``, ``run STAGE [MODEL]``, ``predict``, ``bench``,
``bench-preprocess``, ``bench-streaming``, ``make-folder-dataset``, ``verify``, ``compare``, ``experiments``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import textwrap
from pathlib import Path

from imgpipe import MODEL_NAMES
from imgpipe.pipeline.config import ParamsError, load_params, stage_parameters
from imgpipe.data.fetch import DataFetchError, fetch_fashion_mnist
from imgpipe.artifacts.files import save_text
from imgpipe.artifacts.paths import project_paths
from imgpipe.evaluation.revisions import CompareError
from imgpipe.pipeline.runner import STAGE_NOTEBOOKS, StageFailed, execute_stage, publish_html, record_skipped

LOGGER = logging.getLogger("imgpipe")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="imgpipe", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("fetch-data", help="fill data/raw with the verified Fashion-MNIST files")
    commands.add_parser("check-params", help="validate params.yaml and exit")
    run = commands.add_parser("run", help="execute one stage notebook with Papermill and publish it as HTML")
    run.add_argument("stage", choices=sorted(STAGE_NOTEBOOKS))
    run.add_argument("model", nargs="?", help="model name, for the train and evaluate stages")
    predict = commands.add_parser("predict", help="label image files, folders or globs with an exported model")
    predict.add_argument("--model", required=True, choices=MODEL_NAMES, help="which exported family to use")
    predict.add_argument("--json", action="store_true", help="one JSON object per line instead of text")
    predict.add_argument("--export-dir", help="folder of version folders (default: exported/<model>)")
    predict.add_argument("inputs", nargs="+", help="image files, folders (recursive) or glob patterns")
    bench = commands.add_parser("bench", help="training speed: naive model.fit against the pipeline, vs sgemm")
    bench.add_argument("--images", type=int, default=12800, help="training images per measurement")
    bench.add_argument("--warmup-images", type=int, default=1280, help="images trained before timing starts")
    bench.add_argument("--output", default="bench/training.json", help="where the JSON results go")
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


def _bench(images: int, warmup_images: int, output: str) -> None:
    from imgpipe.bench.training import run_benchmark, write_benchmark   # TensorFlow loads only for this command

    paths = project_paths()
    table = write_benchmark(run_benchmark(paths, images, warmup_images), paths.root / output)
    sys.stdout.write(table + "\n")


def _bench_preprocess(images: int, image_size: int, workers: list[int], output: str) -> None:
    from imgpipe.bench.preprocess import run_benchmark, write_benchmark

    table = write_benchmark(run_benchmark(images, image_size, workers), project_paths().root / output)
    sys.stdout.write(table + "\n")


def _bench_streaming(images: int, memory_limit_mb: int, budgets: list[float], output: str) -> None:
    from imgpipe.bench.streaming import run_benchmark, write_benchmark

    table = write_benchmark(run_benchmark(images, memory_limit_mb, budgets), project_paths().root / output)
    sys.stdout.write(table + "\n")


def _make_folder_dataset(folder: str, per_class: int, with_broken_files: bool) -> None:
    from imgpipe.data import synthetic

    count = synthetic.write_shapes_dataset(Path(folder), per_class)
    broken = synthetic.write_broken_files(Path(folder)) if with_broken_files else {}
    LOGGER.info("wrote %d images and %d broken files under %s", count, len(broken), folder)


def _predict(model: str, inputs: list[str], as_json: bool, export_dir: str | None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")         # keep TensorFlow's C++ start-up notes off the output
    from imgpipe.serving.predict import run_predict                    # TensorFlow loads only for this command

    return run_predict(inputs, Path(export_dir) if export_dir else project_paths().export_dir(model), as_json)


def _run_stage(stage: str, model: str | None) -> None:
    paths = project_paths()
    if stage == "crossval" and not stage_parameters(load_params(paths.params), stage, model)["enabled"]:
        reason = f"cross-validation of {model} was not requested (crossval.enabled and crossval.models in params.yaml)."
        record_skipped(paths, stage, model, reason)
        return
    executed = execute_stage(paths, stage, model)
    html = paths.reports / ("index.html" if stage == "report" else executed.with_suffix(".html").name)
    publish_html(executed, html, hide_code=stage == "report")
    LOGGER.info("published %s", html.relative_to(paths.root))


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    args = _parser().parse_args(argv)
    try:
        if args.command == "fetch-data":
            paths = project_paths()
            fetch_fashion_mnist(paths.raw_data, paths.root)
        elif args.command == "check-params":
            load_params(project_paths().params)
            LOGGER.info("params.yaml is valid")
        elif args.command == "predict":
            return _predict(args.model, args.inputs, args.json, args.export_dir)
        elif args.command == "verify":
            return _verify(args.keep)
        elif args.command == "compare":
            return _compare(args.first, args.second, args.json, args.html, args.expect)
        elif args.command == "experiments":
            _experiments(args.json)
        elif args.command == "bench":
            _bench(args.images, args.warmup_images, args.output)
        elif args.command == "bench-preprocess":
            _bench_preprocess(args.images, args.image_size, args.workers, args.output)
        elif args.command == "bench-streaming":
            _bench_streaming(args.images, args.memory_limit_mb, args.budgets, args.output)
        elif args.command == "make-folder-dataset":
            _make_folder_dataset(args.folder, args.per_class, args.with_broken_files)
        else:
            _run_stage(args.stage, args.model)
    except (ParamsError, DataFetchError, StageFailed, FileNotFoundError) as error:
        LOGGER.error("%s", error)
        return 1
    except CompareError as error:
        LOGGER.error("%s", error)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
