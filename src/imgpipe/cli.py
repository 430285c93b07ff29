"""Command line: ``imgpipe fetch-data``, ``imgpipe check-params``, ``imgpipe run STAGE [MODEL]``."""

from __future__ import annotations

import argparse
import logging
import sys

from imgpipe.config import ParamsError, load_params, stage_parameters
from imgpipe.fetch import DataFetchError, fetch_fashion_mnist
from imgpipe.paths import project_paths
from imgpipe.runner import STAGE_NOTEBOOKS, StageFailed, execute_stage, publish_html, record_skipped

LOGGER = logging.getLogger("imgpipe")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="imgpipe", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("fetch-data", help="fill data/raw with the verified Fashion-MNIST files")
    commands.add_parser("check-params", help="validate params.yaml and exit")
    run = commands.add_parser("run", help="execute one stage notebook with Papermill and publish it as HTML")
    run.add_argument("stage", choices=sorted(STAGE_NOTEBOOKS))
    run.add_argument("model", nargs="?", help="model name, for the train and evaluate stages")
    return parser


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
        else:
            _run_stage(args.stage, args.model)
    except (ParamsError, DataFetchError, StageFailed, FileNotFoundError) as error:
        LOGGER.error("%s", error)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
