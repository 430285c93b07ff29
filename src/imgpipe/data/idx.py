"""Decoding of MNIST-format IDX files (plain or gzip-compressed)."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

_UBYTE_TYPE_CODE = 0x08


class IdxFormatError(ValueError):
    """An IDX file whose header or size does not describe its contents."""


def decode_idx(payload: bytes, source: str) -> np.ndarray:
    """Decode the bytes of an unsigned-byte IDX file into an array of its declared shape."""
    if len(payload) < 4:
        raise IdxFormatError(f"{source}: {len(payload)} bytes is too short for an IDX header (expected at least 4).")
    zero, type_code, ndim = struct.unpack(">HBB", payload[:4])
    if zero != 0 or type_code != _UBYTE_TYPE_CODE or ndim == 0:
        raise IdxFormatError(
            f"{source}: IDX magic {payload[:4].hex()} is not an unsigned-byte IDX header "
            "(expected 0000 08 followed by the number of dimensions)."
        )
    header_end = 4 + 4 * ndim
    if len(payload) < header_end:
        raise IdxFormatError(f"{source}: header declares {ndim} dimensions but the file ends after {len(payload)} bytes.")
    shape = struct.unpack(f">{ndim}I", payload[4:header_end])
    expected = int(np.prod(shape, dtype=np.int64))
    found = len(payload) - header_end
    if found != expected:
        raise IdxFormatError(
            f"{source}: header declares shape {shape} ({expected} values) but the file holds {found} values."
        )
    return np.frombuffer(payload, dtype=np.uint8, offset=header_end).reshape(shape)


def load_idx(path: Path) -> np.ndarray:
    """Read an IDX file from disk, gunzipping it when its name ends in ``.gz``."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            payload = handle.read()
    except (OSError, EOFError) as exc:
        raise IdxFormatError(f"{path}: cannot be read as {'gzip' if opener is gzip.open else 'IDX'} ({exc}).") from None
    return decode_idx(payload, str(path))
