"""tf.distribute for the train stage: the strategy a param names, the replica scaling rules, which worker
writes what, and a workaround that lets Keras 3 ``fit`` run under MultiWorkerMirroredStrategy."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from imgpipe.artifacts.paths import ProjectPaths
from imgpipe.config.schema import STRATEGIES

LOGGER = logging.getLogger(__name__)



def make_strategy(name: str) -> tf.distribute.Strategy:
    """The tf.distribute strategy: ``default`` (one device), ``mirrored`` (every local GPU) or
    ``multi_worker`` (the cluster that the ``TF_CONFIG`` environment variable describes).

    Create it before any other TensorFlow work: MultiWorkerMirroredStrategy must start first.
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        check_tf_config(os.environ.get("TF_CONFIG"))
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"unknown strategy {name!r}; expected one of {', '.join(STRATEGIES)}.")


class ClusterConfigError(ValueError):
    """``TF_CONFIG`` is missing or does not describe this worker's place in a cluster."""


_TF_CONFIG_EXAMPLE = ('{"cluster": {"worker": ["host0:12345", "host1:12345"]}, '
                      '"task": {"type": "worker", "index": 0}}')


def check_tf_config(text: str | None) -> dict[str, Any]:
    """The parsed ``TF_CONFIG``, or a :class:`ClusterConfigError` that names it, the problem and an example."""
    where = "train.strategy is multi_worker, so the environment variable TF_CONFIG must describe the cluster"
    if not text or not text.strip():
        raise ClusterConfigError(f"{where}, but TF_CONFIG is not set; set it on every worker, e.g. "
                                 f"TF_CONFIG='{_TF_CONFIG_EXAMPLE}'.")
    try:
        config = json.loads(text)
    except json.JSONDecodeError as error:
        raise ClusterConfigError(f"{where}, but TF_CONFIG is not valid JSON ({error.msg} at character "
                                 f"{error.pos}: {text[:80]!r}); expected e.g. '{_TF_CONFIG_EXAMPLE}'.") from None
    cluster = config.get("cluster") if isinstance(config, dict) else None
    task = config.get("task") if isinstance(config, dict) else None
    if not isinstance(cluster, dict) or not cluster or not all(
            isinstance(hosts, list) and hosts and all(isinstance(h, str) and ":" in h for h in hosts)
            for hosts in cluster.values()):
        raise ClusterConfigError(f"{where}, but TF_CONFIG's 'cluster' is {cluster!r}; expected a mapping of job "
                                 f"names to lists of 'host:port', e.g. '{_TF_CONFIG_EXAMPLE}'.")
    if not isinstance(task, dict) or task.get("type") not in cluster or not isinstance(task.get("index"), int) \
            or not 0 <= task["index"] < len(cluster[task["type"]]):
        raise ClusterConfigError(f"{where}, but TF_CONFIG's 'task' is {task!r}; expected this worker's job type "
                                 f"(one of {sorted(cluster)}) and its index in that job's list.")
    return config


def worker_index(strategy: tf.distribute.Strategy) -> int:
    """This process's worker number: 0 for the chief (and for single-process strategies)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or resolver.task_type in (None, "chief"):
        return 0
    return int(resolver.task_id) + (1 if "chief" in resolver.cluster_spec().as_dict() else 0)


def output_paths(paths: ProjectPaths, strategy: tf.distribute.Strategy) -> ProjectPaths:
    """Where this worker writes its model, metrics and curves: the project for the chief, a temporary
    folder for every other worker (they hold the same model; only the chief's copy is kept)."""
    index = worker_index(strategy)
    if index == 0:
        return paths
    folder = Path(tempfile.mkdtemp(prefix=f"imgpipe-worker-{index}-"))
    LOGGER.info("worker %d writes its model, metrics and curves to %s (only the chief's are kept)", index, folder)
    return ProjectPaths(folder)


def outputs_label(out: ProjectPaths, paths: ProjectPaths) -> str:
    """Where this worker's outputs go, in words for the notebook (no machine-specific path for the chief)."""
    if out.root != paths.root:
        return f"a temporary folder ({out.root.name}; only the chief's outputs are kept)"
    return "scratch/ (a notebook run by hand)" if paths.scratch is not None else "the project's folders"


def checkpoint_dir(paths: ProjectPaths, model_name: str, strategy: tf.distribute.Strategy) -> Path:
    """Where this worker backs up its training state each epoch (each worker its own folder)."""
    index = worker_index(strategy)
    folder = paths.checkpoint_dir(model_name)
    return folder if index == 0 else folder / f"worker-{index}"


def scale_for_replicas(batch_size: int, learning_rate: float, replicas: int) -> tuple[int, float]:
    """Global batch size and learning rate for ``replicas`` synchronous replicas: ``batch_size`` is per
    replica, and the rate grows linearly with the global batch (Goyal et al., 2017)."""
    return batch_size * replicas, learning_rate * replicas


def remove_worker_outputs(out: ProjectPaths, paths: ProjectPaths) -> None:
    """Delete a non-chief worker's temporary output folder once its copy of the results is no longer needed."""
    if out.root != paths.root:
        shutil.rmtree(out.root, ignore_errors=True)
        LOGGER.info("removed %s", out.root)


@contextlib.contextmanager
def multi_worker_fit(model: keras.Model) -> Iterator[None]:
    """Let Keras 3 ``fit`` run under MultiWorkerMirroredStrategy (keras-team/keras#20585).

    Keras 3.15 fails there twice: its symbolic build averages a distributed batch with a reduce the
    collective strategy rejects, and it averages each step's scalar logs along an axis they lack. So the
    optimizer is built up front, the strategy comes from the enclosing scope instead of the model (which
    skips the symbolic build), and every step log gets a length-1 axis. Other strategies are untouched.
    """
    strategy = model.distribute_strategy
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        yield
        return
    with strategy.scope():
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
    for name in ("train_step", "test_step"):
        step = getattr(model, name)
        setattr(model, name, lambda data, step=step: {key: tf.reshape(value, [1]) for key, value in step(data).items()})
    model._distribute_strategy = None
    try:
        with strategy.scope():
            yield
    finally:
        model._distribute_strategy = strategy
        del model.train_step, model.test_step
