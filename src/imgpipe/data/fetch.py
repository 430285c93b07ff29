"""Fill ``data/raw/`` with the four Fashion-MNIST IDX files, verified by checksum.

Sources are tried in order: files already present, the configured DVC remote, Debian's
``dataset-fashion-mnist`` package (installed with apt when running as root), and the
official download. Files are copied to a temporary name and renamed only once their
checksum matches, so ``data/raw/`` never holds a half-copied file.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
import urllib.request
from collections.abc import Callable
from pathlib import Path

LOGGER = logging.getLogger(__name__)

FASHION_MNIST_MD5: dict[str, str] = {
    "train-images-idx3-ubyte.gz": "cf8536b0aa1a6ac5fa3f23001093305c",
    "train-labels-idx1-ubyte.gz": "10bea18fdb374794d4bb42e356e600c9",
    "t10k-images-idx3-ubyte.gz": "f78720b4224f21cce2f2ccf2d7a94c9a",
    "t10k-labels-idx1-ubyte.gz": "0d30e22e447f3c33dab9ed536400ac01",
}
DEBIAN_PACKAGE = "dataset-fashion-mnist"
DEBIAN_FOLDER = Path("/usr/share/datasets/fashion-mnist")
OFFICIAL_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"


class DataFetchError(RuntimeError):
    """No source could provide a file with the expected checksum."""


def md5_of(path: Path) -> str:
    """MD5 hex digest of a file, the checksum DVC records."""
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "md5").hexdigest()


def _install_into(target: Path, write: Callable[[Path], None], expected_md5: str) -> str:
    """Write a file via ``write`` to a temporary name beside ``target``; keep it only if it verifies."""
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    os.close(handle)
    os.chmod(temporary, 0o644)
    temporary_path = Path(temporary)
    try:
        write(temporary_path)
        found = md5_of(temporary_path)
        if found == expected_md5:
            os.replace(temporary_path, target)
        return found
    finally:
        temporary_path.unlink(missing_ok=True)


def _missing(raw_dir: Path) -> list[str]:
    return [name for name, md5 in FASHION_MNIST_MD5.items()
            if not (raw_dir / name).is_file() or md5_of(raw_dir / name) != md5]


def _from_dvc_remote(raw_dir: Path, project_root: Path) -> str:
    if not (project_root / ".dvc").is_dir() or shutil.which("dvc") is None:
        return f"DVC remote: {project_root} is not a DVC project"
    remotes = subprocess.run(["dvc", "remote", "list"], cwd=project_root, capture_output=True, text=True)
    if remotes.returncode != 0 or not remotes.stdout.strip():
        return "DVC remote: none configured"
    pulled = subprocess.run(["dvc", "pull", "data.dvc"], cwd=project_root, capture_output=True, text=True)
    return f"DVC remote: dvc pull exited {pulled.returncode}"


def _ensure_debian_package(folder: Path) -> None:
    if folder != DEBIAN_FOLDER or folder.is_dir() or os.geteuid() != 0 or shutil.which("apt-get") is None:
        return
    LOGGER.info("installing Debian package %s with apt-get", DEBIAN_PACKAGE)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", DEBIAN_PACKAGE]
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
        subprocess.run(install, env=env, capture_output=True)


def _copy_from_folder(raw_dir: Path, folder: Path, found: dict[str, str]) -> None:
    for name in _missing(raw_dir):
        source = folder / name
        if source.is_file():
            found[f"{source}"] = _install_into(raw_dir / name, lambda tmp, s=source: shutil.copyfile(s, tmp),
                                               FASHION_MNIST_MD5[name])


def _download(raw_dir: Path, base_url: str, found: dict[str, str], timeout_s: float) -> None:
    def fetch(url: str, temporary: Path) -> None:
        with urllib.request.urlopen(url, timeout=timeout_s) as response, temporary.open("wb") as out:
            shutil.copyfileobj(response, out)

    for name in _missing(raw_dir):
        url = base_url + name
        try:
            found[url] = _install_into(raw_dir / name, lambda tmp, u=url: fetch(u, tmp), FASHION_MNIST_MD5[name])
        except OSError as exc:
            found[url] = f"unreachable ({exc.__class__.__name__})"


def fetch_fashion_mnist(raw_dir: Path, project_root: Path, debian_folder: Path = DEBIAN_FOLDER,
                        official_url: str = OFFICIAL_URL, download_timeout_s: float = 20.0) -> list[str]:
    """Make ``raw_dir`` hold the four verified files; return the sources that were tried."""
    tried: list[str] = [f"existing files in {raw_dir}"]
    found: dict[str, str] = {}
    if _missing(raw_dir):
        tried.append(_from_dvc_remote(raw_dir, project_root))
    if _missing(raw_dir):
        _ensure_debian_package(debian_folder)
        tried.append(f"Debian package {DEBIAN_PACKAGE} at {debian_folder}")
        _copy_from_folder(raw_dir, debian_folder, found)
    if _missing(raw_dir):
        tried.append(f"official download from {official_url}")
        _download(raw_dir, official_url, found, download_timeout_s)
    missing = _missing(raw_dir)
    if missing:
        details = "; ".join(
            f"{name}: expected md5 {FASHION_MNIST_MD5[name]}, found "
            + (", ".join(f"{md5} at {src}" for src, md5 in found.items() if src.endswith(name)) or "no copy")
            for name in missing
        )
        raise DataFetchError(f"Could not obtain verified Fashion-MNIST files in {raw_dir}. {details}. "
                             f"Sources tried: {'; '.join(tried)}.")
    LOGGER.info("data/raw holds the four verified Fashion-MNIST files")
    return tried
