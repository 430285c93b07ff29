"""Which SavedModels ``imgpipe predict`` loads: graphs made of the operations imgpipe's own export uses.

A SavedModel holds no Python, but its graph may hold any TensorFlow operation, and some read or
write files (``ReadFile``, ``WriteFile``, ``SaveV2``, …), call back into Python (``PyFunc``,
``EagerPyFunc``) or load native code. Loading or calling such a model runs them. Before a model from
outside the project's own ``exported/`` is loaded, every function of its graph is checked against
:data:`SERVING_OPS`, the operations the three families' exports use (a test keeps the list in step with
the exporter); the checkpoint operations that every SavedModel carries are accepted only inside its
own save and restore functions, which loading for prediction never runs.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

SERVING_OPS = frozenset({
    "AddV2", "All", "ArgMax", "Assert", "AssignVariableOp", "BatchMatMulV2", "BiasAdd", "Cast", "ConcatV2", "Const",
    "Conv2D", "DisableCopyOnRead", "EnsureShape", "Equal", "Erf", "Erfc", "ExpandDims", "Fill", "FusedBatchNormV3",
    "GatherV2", "GreaterEqual", "Identity", "If", "Less", "LogicalAnd", "MatMul", "Max", "MaxPool", "Maximum",
    "Mean", "Mul", "Neg", "NoOp", "Pack", "Pad", "Placeholder", "Prod", "Range", "ReadVariableOp", "RealDiv",
    "Relu", "Reshape", "ReverseV2", "Rsqrt", "ScaleAndTranslate", "Select", "Shape", "Sigmoid", "Softmax", "Split", "SplitV",
    "Sqrt", "SquaredDifference", "Squeeze", "StatefulPartitionedCall", "StatelessIf", "StaticRegexFullMatch",
    "StopGradient", "StridedSlice", "StringJoin", "Sub", "Tanh", "TensorListFromTensor", "TensorListGetItem",
    "TensorListReserve", "TensorListSetItem", "TensorListStack", "Tile", "Transpose", "Unpack", "VarHandleOp",
    "VarIsInitializedOp", "While",
})
# Checkpoint file I/O: only in the SavedModel's own save/restore functions (its saver_def).
CHECKPOINT_OPS = frozenset({"SaveV2", "RestoreV2", "MergeV2Checkpoints", "ShardedFilename"})


class UntrustedModelError(ValueError):
    """A SavedModel holds operations that imgpipe's own exports never use."""


def _called_functions(nodes: Iterable) -> set[str]:
    """Names of the library functions that these NodeDefs call (``f``, branches, loop bodies, lists)."""
    names = set()
    for node in nodes:
        for value in node.attr.values():
            if value.func.name:
                names.add(value.func.name)
            names.update(func.name for func in value.list.func)
    return names


def _reachable(start: set[str], library: dict) -> set[str]:
    seen, pending = set(), list(start)
    while pending:
        name = pending.pop()
        if name in seen or name not in library:
            continue
        seen.add(name)
        pending += _called_functions(library[name].node_def)
    return seen


def foreign_ops(version_dir: Path) -> dict[str, set[str]]:
    """For each graph (``graph``) and library function of a SavedModel, the operations outside the allowed sets."""
    from google.protobuf.message import DecodeError
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel()
    try:
        saved_model.ParseFromString((version_dir / "saved_model.pb").read_bytes())
    except (OSError, DecodeError) as error:
        raise UntrustedModelError(f"{version_dir}: not a readable SavedModel ({type(error).__name__}: {error}).") \
            from None
    found: dict[str, set[str]] = {}
    for graph in saved_model.meta_graphs:
        library = {function.signature.name: function for function in graph.graph_def.library.function}
        saver_nodes = {graph.saver_def.save_tensor_name.split(":")[0], graph.saver_def.restore_op_name}
        saver = _reachable(_called_functions(n for n in graph.graph_def.node if n.name in saver_nodes), library)
        # The save/restore functions count as such only if nothing else (a signature, a restored function) calls them.
        entry_points = _called_functions(n for n in graph.graph_def.node if n.name not in saver_nodes) | set(
            graph.object_graph_def.concrete_functions)
        saver -= _reachable(entry_points | _called_functions(
            node for name, function in library.items() if name not in saver for node in function.node_def), library)
        if extra := {node.op for node in graph.graph_def.node} - SERVING_OPS:
            found.setdefault("graph", set()).update(extra)
        for name, function in library.items():
            allowed = SERVING_OPS | CHECKPOINT_OPS if name in saver else SERVING_OPS
            if extra := {node.op for node in function.node_def} - allowed:
                found.setdefault(name, set()).update(extra)
    return found


def check_trusted(version_dir: Path) -> None:
    """Raise :class:`UntrustedModelError` naming each foreign operation and where it is."""
    found = foreign_ops(version_dir)
    if found:
        listing = "; ".join(f"{', '.join(sorted(ops))} in {where}" for where, ops in sorted(found.items()))
        raise UntrustedModelError(
            f"{version_dir}: refused to load this SavedModel: its graph uses operations that imgpipe's own export "
            f"never uses ({listing}). Such operations can read or write files, or run Python code, on this machine "
            "when the model is loaded or called. Load it only if you trust where it came from: "
            "`imgpipe predict --trust-model …`.")
