"""Fetching raw data: verified copies land, a bad copy never does, and the error names everything tried."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from imgpipe.data.fetch import FASHION_MNIST_MD5, DataFetchError, fetch_fashion_mnist, md5_of

REFUSED_URL = "http://127.0.0.1:9/"        # the discard port: connection refused at once


@pytest.fixture
def good_copy(project_root: Path, tmp_path: Path) -> Path:
    """A folder holding the four genuine files (the project's data/raw, filled by `make data`)."""
    source = project_root / "data" / "raw"
    if not all((source / name).is_file() for name in FASHION_MNIST_MD5):
        pytest.skip("data/raw is empty; run `make data` first")
    folder = tmp_path / "mirror"
    shutil.copytree(source, folder)
    return folder


def test_copies_and_verifies_from_a_folder(good_copy: Path, tmp_path: Path) -> None:
    raw = tmp_path / "project" / "data" / "raw"
    tried = fetch_fashion_mnist(raw, tmp_path / "project", debian_folder=good_copy, official_url=REFUSED_URL)
    assert sorted(p.name for p in raw.iterdir()) == sorted(FASHION_MNIST_MD5)
    assert all(md5_of(raw / name) == md5 for name, md5 in FASHION_MNIST_MD5.items())
    assert any("Debian package" in source for source in tried)
    # A second call finds everything in place and tries nothing else.
    assert fetch_fashion_mnist(raw, tmp_path / "project", debian_folder=tmp_path / "nowhere",
                               official_url=REFUSED_URL) == [f"existing files in {raw}"]


def test_a_corrupt_copy_is_refused_and_leaves_nothing(good_copy: Path, tmp_path: Path) -> None:
    corrupt = good_copy / "t10k-labels-idx1-ubyte.gz"
    corrupt.write_bytes(corrupt.read_bytes()[:-10] + b"0123456789")
    raw = tmp_path / "project" / "data" / "raw"
    with pytest.raises(DataFetchError) as error:
        fetch_fashion_mnist(raw, tmp_path / "project", debian_folder=good_copy, official_url=REFUSED_URL)
    message = str(error.value)
    assert f"t10k-labels-idx1-ubyte.gz: expected md5 {FASHION_MNIST_MD5['t10k-labels-idx1-ubyte.gz']}" in message
    assert f"found {md5_of(corrupt)} at {corrupt}" in message
    assert "official download from http://127.0.0.1:9/" in message and "DVC remote" in message
    # The three good files were installed; the corrupt one and any temporary file were not.
    assert sorted(p.name for p in raw.iterdir()) == sorted(set(FASHION_MNIST_MD5) - {corrupt.name})
