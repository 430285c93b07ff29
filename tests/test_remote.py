"""`dvc push` and `dvc pull` against real servers on loopback: an S3 endpoint (moto's server) and an
SSH remote (Debian's OpenSSH sshd, with its own config, host key and client key). The tiny pipeline is
pushed, its cache and outputs are deleted, and `dvc pull` brings back the same bytes, after which
`dvc repro` has nothing to run."""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import BIN, run

pytestmark = pytest.mark.pipeline
SSHD = Path("/usr/sbin/sshd")
CREDENTIALS = {"aws_access_key_id": "imgpipe-test", "aws_secret_access_key": "imgpipe-test-secret"}
REGION = "us-east-1"


@dataclass(frozen=True)
class SshServer:
    port: int
    user: str
    keyfile: Path
    storage: Path
    host_key: Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def listening(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:port."""
    with socket.create_connection(("127.0.0.1", port), timeout=1):
        return True


def start(command: list[str], log: Path) -> subprocess.Popen[bytes]:
    """Start a server with its output in a log file (a pipe nobody reads would fill up and stall it)."""
    with log.open("wb") as output:
        return subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def wait_until(ready: Callable[[], bool], process: subprocess.Popen[bytes], log: Path, seconds: float = 60) -> None:
    """Poll `ready` until it holds; fail with the server's log if it exits or the time runs out."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{process.args[0]} exited {process.returncode}:\n{log.read_text()[-4000:]}")
        try:
            if ready():
                return
        except OSError:
            pass
        time.sleep(0.2)
    pytest.fail(f"{process.args[0]} did not answer within {seconds:.0f} s:\n{log.read_text()[-4000:]}")


def stop(process: subprocess.Popen[bytes]) -> None:
    """End a server this module started: SIGTERM, then SIGKILL after 10 s."""
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def sshd_path() -> Path:
    """Debian's sshd; a skip when it is missing, a failure under CI (make test installs it as root)."""
    if not SSHD.is_file() or shutil.which("ssh-keygen") is None:
        message = "Debian's openssh-server is not installed (make test installs it when run as root)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return SSHD


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's S3-compatible server on a free loopback port; yields its endpoint URL."""
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto_server.log"
    server = start([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], log)
    try:
        wait_until(lambda: listening(port), server, log)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(server)


def s3_client(endpoint: str) -> Any:  # boto3 generates the client's class at run time
    """A boto3 S3 client for the moto server, with the test's dummy credentials."""
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, region_name=REGION, **CREDENTIALS)


def bucket_keys(endpoint: str, bucket: str) -> set[str]:
    """Every object key in the bucket."""
    pages = s3_client(endpoint).get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return {item["Key"] for page in pages for item in page.get("Contents", [])}


@pytest.fixture(scope="module")
def ssh_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    """An sshd of the test's own (config, host key, client key, authorized_keys) on a free loopback port."""
    sshd = sshd_path()
    home = tmp_path_factory.mktemp("sshd")
    for key in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"imgpipe-test-{key}",
                        "-f", str(home / key)], check=True)
    shutil.copy(home / "client_key.pub", home / "authorized_keys")
    port = free_port()
    (home / "sshd_config").write_text("\n".join([
        f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {home / 'host_key'}", f"PidFile {home / 'sshd.pid'}",
        f"AuthorizedKeysFile {home / 'authorized_keys'}", "PubkeyAuthentication yes", "PasswordAuthentication no",
        "KbdInteractiveAuthentication no", "PermitRootLogin prohibit-password", "StrictModes no", "UsePAM no",
        "Subsystem sftp internal-sftp", "LogLevel ERROR", ""]))
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)      # sshd's privilege-separation directory
    server = start([str(sshd), "-D", "-e", "-f", str(home / "sshd_config")], home / "sshd.log")

    def banner() -> bool:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as connection:
            return connection.recv(64).startswith(b"SSH-2.0-")

    try:
        wait_until(banner, server, home / "sshd.log")
        storage = home / "storage"
        storage.mkdir()
        yield SshServer(port=port, user=getpass.getuser(), keyfile=home / "client_key", storage=storage,
                        host_key=home / "host_key.pub")
    finally:
        stop(server)


def project_copy(repo: Path, target: Path) -> Path:
    """A private copy of the reproduced tiny pipeline (with its DVC cache), so the shared one stays untouched."""
    shutil.copytree(repo, target, symlinks=True)
    shutil.rmtree(target / ".dvc" / "tmp", ignore_errors=True)
    run(["dvc", "repro"], target)       # a no-op unless an earlier test left the shared copy changed
    return target


def cached_outputs(project: Path) -> dict[str, str]:
    """Each output DVC caches (data.dvc's data/raw and every cached stage output): path -> recorded md5."""
    from dvc.repo import Repo

    with Repo(str(project)) as dvc_repo:
        return {out.def_path: out.hash_info.value for out in dvc_repo.index.outs if out.use_cache}


def cache_object(project: Path, md5: str) -> Path:
    """Where DVC 3 keeps the object with this md5 in the project's cache."""
    return project / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]


def md5_of(path: Path) -> str:
    """The file's md5, as DVC records it."""
    return hashlib.md5(path.read_bytes()).hexdigest()


def expected_objects(project: Path, outputs: dict[str, str]) -> set[str]:
    """The object names (`files/md5/ab/cdef…`) a push of these outputs must leave on the remote."""
    names = set()
    for md5 in outputs.values():
        names.add(md5)
        if md5.endswith(".dir"):
            names.update(entry["md5"] for entry in json.loads(cache_object(project, md5).read_text()))
    return {f"files/md5/{name[:2]}/{name[2:]}" for name in names}


def assert_outputs_match(project: Path, outputs: dict[str, str]) -> None:
    """Every cached output is back in the workspace with the md5 dvc.lock / data.dvc record."""
    for path, md5 in outputs.items():
        target = project / path
        if not md5.endswith(".dir"):
            assert target.is_file() and md5_of(target) == md5, path
            continue
        manifest = cache_object(project, md5)
        assert md5_of(manifest) == md5.removesuffix(".dir"), path
        entries = {entry["relpath"]: entry["md5"] for entry in json.loads(manifest.read_text())}
        found = {file.relative_to(target).as_posix(): md5_of(file) for file in target.rglob("*") if file.is_file()}
        assert found == entries, path


def delete_cache_and_outputs(project: Path, outputs: dict[str, str]) -> None:
    """Remove the whole DVC cache and these outputs, as on a fresh clone."""
    shutil.rmtree(project / ".dvc" / "cache")
    for path in outputs:
        target = project / path
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink()
    assert not any((project / path).exists() for path in outputs)


def push_delete_pull(project: Path, remote_objects: Callable[[], set[str]]) -> None:
    """Push everything, check the remote holds it, delete the cache and outputs, pull, and check the result."""
    outputs = cached_outputs(project)
    assert {"data/raw", "data/processed/dataset.npz", "models/cnn.keras", "models/rnn.keras",
            "models/attention.keras"} <= outputs.keys()
    expected = expected_objects(project, outputs)
    assert remote_objects() == set()
    run(["dvc", "push"], project)
    assert remote_objects() == expected
    assert "in sync" in run(["dvc", "status", "--cloud"], project).stdout

    delete_cache_and_outputs(project, outputs)
    pulled = run(["dvc", "pull"], project)
    assert "added" in pulled.stdout, pulled.stdout
    assert_outputs_match(project, outputs)

    assert "Data and pipelines are up to date." in run(["dvc", "status"], project).stdout
    repro = run(["dvc", "repro"], project).stdout
    assert "Running stage" not in repro and "Data and pipelines are up to date." in repro, repro
    assert {"preprocess", "split", "train@cnn", "report"} <= {
        line.split("'")[1] for line in repro.splitlines() if line.startswith("Stage '") and "didn't change" in line}


def add_s3_remote(project: Path, endpoint: str, bucket: str) -> None:
    s3_client(endpoint).create_bucket(Bucket=bucket)
    run(["dvc", "remote", "add", "-d", "storage", f"s3://{bucket}/imgpipe"], project)
    run(["dvc", "remote", "modify", "storage", "endpointurl", endpoint], project)
    run(["dvc", "remote", "modify", "storage", "region", REGION], project)
    for option, value in (("access_key_id", CREDENTIALS["aws_access_key_id"]),
                          ("secret_access_key", CREDENTIALS["aws_secret_access_key"])):
        run(["dvc", "remote", "modify", "--local", "storage", option, value], project)   # secrets stay out of git
    assert "secret" not in (project / ".dvc" / "config").read_text()


def test_push_and_pull_through_an_s3_server(repo: Path, s3_endpoint: str, tmp_path: Path) -> None:
    project = project_copy(repo, tmp_path / "project")
    add_s3_remote(project, s3_endpoint, "imgpipe-push-pull")
    push_delete_pull(project, lambda: {key.removeprefix("imgpipe/") for key in
                                       bucket_keys(s3_endpoint, "imgpipe-push-pull")})


def test_pull_from_an_empty_s3_bucket_fails_naming_what_is_missing(repo: Path, s3_endpoint: str,
                                                                  tmp_path: Path) -> None:
    project = project_copy(repo, tmp_path / "project")
    add_s3_remote(project, s3_endpoint, "imgpipe-empty")
    delete_cache_and_outputs(project, {"data/raw": cached_outputs(project)["data/raw"]})
    pulled = run(["dvc", "pull", "data.dvc"], project, check=False)
    assert pulled.returncode != 0
    message = pulled.stdout + pulled.stderr
    assert "failed to pull data from the cloud" in message and "data/raw" in message, message
    assert not (project / "data" / "raw").exists()


def trust_host_key(home: Path, port: int, public_key: Path) -> None:
    """A HOME whose ~/.ssh/known_hosts lists ``public_key`` for 127.0.0.1:port, as `ssh` would after a first login."""
    (home / ".ssh").mkdir(parents=True, exist_ok=True)
    (home / ".ssh" / "known_hosts").write_text(f"[127.0.0.1]:{port} {public_key.read_text().strip()}\n")


def add_ssh_remote(project: Path, ssh_server: SshServer, folder: str = "") -> None:
    run(["dvc", "remote", "add", "-d", "storage",
         f"ssh://{ssh_server.user}@127.0.0.1{ssh_server.storage / folder}"], project)
    run(["dvc", "remote", "modify", "storage", "port", str(ssh_server.port)], project)
    run(["dvc", "remote", "modify", "storage", "verify", "true"], project)
    run(["dvc", "remote", "modify", "--local", "storage", "keyfile", str(ssh_server.keyfile)], project)


@pytest.fixture
def known_host(ssh_server: SshServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """HOME for the dvc commands, with the test server's host key in its known_hosts."""
    home = tmp_path / "home"
    trust_host_key(home, ssh_server.port, ssh_server.host_key)
    monkeypatch.setenv("HOME", str(home))
    return home


def test_push_and_pull_through_an_ssh_server(repo: Path, ssh_server: SshServer, known_host: Path,
                                             tmp_path: Path) -> None:
    project = project_copy(repo, tmp_path / "project")
    add_ssh_remote(project, ssh_server)
    push_delete_pull(project, lambda: {file.relative_to(ssh_server.storage).as_posix()
                                       for file in ssh_server.storage.rglob("*") if file.is_file()})


def test_the_ssh_remote_refuses_a_server_whose_host_key_is_not_known(repo: Path, ssh_server: SshServer,
                                                                     known_host: Path, tmp_path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")], check=True)
    trust_host_key(known_host, ssh_server.port, tmp_path / "other.pub")   # the server now shows another key
    project = project_copy(repo, tmp_path / "project")
    add_ssh_remote(project, ssh_server, "untrusted")
    pushed = run(["dvc", "push", "models/cnn.keras"], project, check=False)
    assert pushed.returncode != 0
    assert "Host key is not trusted for host 127.0.0.1" in pushed.stdout + pushed.stderr, pushed.stderr[-3000:]
    assert not (ssh_server.storage / "untrusted").exists(), "data went to a host whose key is not trusted"


def test_the_ssh_remote_neither_skips_host_keys_nor_forwards_the_agent() -> None:
    import dvc_ssh

    options = dvc_ssh.SSHFileSystem(host="127.0.0.1", port=22, user="me", keyfile="/dev/null").fs_args
    assert options["known_hosts"] == (), "() makes asyncssh check ~/.ssh/known_hosts; None accepts any host key"
    assert options["agent_forwarding"] is False


def test_a_tampered_object_fails_the_pull_naming_the_file(repo: Path, ssh_server: SshServer, known_host: Path,
                                                          tmp_path: Path) -> None:
    project = project_copy(repo, tmp_path / "project")
    add_ssh_remote(project, ssh_server, "tampered")
    md5 = cached_outputs(project)["models/cnn.keras"]
    run(["dvc", "push", "models/cnn.keras"], project)
    stored = ssh_server.storage / "tampered" / "files" / "md5" / md5[:2] / md5[2:]
    stored.write_text("TAMPERED by the server")
    shutil.rmtree(project / ".dvc" / "cache")
    (project / "models" / "cnn.keras").unlink()
    pulled = run(["dvc", "pull", "models/cnn.keras"], project, check=False)
    message = pulled.stdout + pulled.stderr
    assert pulled.returncode != 0 and "models/cnn.keras" in message, message[-3000:]
    model = project / "models" / "cnn.keras"
    assert not model.exists() or b"TAMPERED" not in model.read_bytes()
    assert "Data and pipelines are up to date." not in run(["dvc", "status"], project, check=False).stdout
    stored.unlink()
