"""`imgpipe verify`'s judgement of a rerun: identical on the same machine fingerprint, consistent on another."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from imgpipe.evaluation.compare import Comparison, ModelComparison
from imgpipe.pipeline.verify import judge, project_tools_environment


def test_verify_expects_identical_on_the_same_machine_and_consistent_elsewhere() -> None:
    def comparison(verdict_found: str, differences: list[str], same_data: bool = True) -> Comparison:
        model = ModelComparison("m", verdict_found, "because", fingerprint_differences=differences,
                                same_probabilities=verdict_found == "identical")
        data = {"dataset": ("d", "d" if same_data else "e")}
        return Comparison({}, {}, {}, [model], [], data, (None, None))

    assert judge(comparison("identical", [])).failures == []
    assert "identical expected" in judge(comparison("consistent", [])).failures[0]
    same_machine = judge(comparison("identical", []))
    assert "bit-identical rerun is expected" in same_machine.notes[0]
    elsewhere = judge(comparison("consistent", ["isa (train)"]))
    assert elsewhere.failures == [] and "fingerprint differs (isa (train))" in elsewhere.notes[0]
    assert "different, consistent expected" in judge(comparison("different", ["isa (train)"])).failures[0]
    assert "data and split" in judge(comparison("identical", [], same_data=False)).failures[0]


def test_the_rerun_imports_the_clones_package_not_the_working_copys(tmp_path: Path) -> None:
    package = tmp_path / "src" / "imgpipe"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    probe = "import imgpipe, pathlib; print(pathlib.Path(imgpipe.__file__).resolve())"
    rerun = subprocess.run([sys.executable, "-c", probe], env=project_tools_environment(tmp_path), cwd=tmp_path,
                           capture_output=True, text=True, check=True).stdout.strip()
    here = subprocess.run([sys.executable, "-c", probe], env=project_tools_environment(), cwd=tmp_path,
                          capture_output=True, text=True, check=True).stdout.strip()
    assert rerun == str((package / "__init__.py").resolve())
    assert here != rerun, "without a clone the working copy's (installed) package is imported"
