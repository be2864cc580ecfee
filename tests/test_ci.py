"""The README's commands and CI agree, and the isolation fixture really catches writes."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from tests.helpers import check_untouched, snapshot, write

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command() -> None:
    block = re.search(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert block is not None
    install_and_run, test_command = block.group(1).strip().splitlines()[:2]
    assert "torchjob run examples/mnist/job.yaml" in install_and_run
    assert "pytest" in test_command
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_command in ci_lines


def run_folder(runs: Path, run_id: str, project: Path, python: Path) -> None:
    """A run folder as `torchjob run -p PROJECT --python PYTHON` leaves it (the fields the
    guard reads, and an interpreter that names no project)."""
    write(
        runs / run_id / "run.json",
        json.dumps(
            {
                "id": run_id,
                "status": "running",
                "cwd": str(project),
                "interpreter": str(python),
                "argv": [str(python), "train.py"],
                "source": {"kind": "local", "path": str(project)},
                "spec": {"spec_file": None, "project": str(project)},
            }
        ),
    )
    write(runs / run_id / "stdout.log", "epoch 1\n")


@pytest.fixture
def stand_ins(tmp_path: Path) -> tuple[list[Path], list[Path]]:
    """Stand-ins for the real user data and cache folders, and for the attribution roots (the
    session's base temp folder, the repository)."""
    return [tmp_path / "real-data", tmp_path / "real-cache"], [
        tmp_path / "basetemp",
        tmp_path / "repo",
    ]


def test_guard_ignores_what_another_process_of_the_user_writes(
    stand_ins: tuple[list[Path], list[Path]], tmp_path: Path
) -> None:
    """The user runs a real job in another terminal while the suite runs: the run folder and
    cache entries it makes name the user's own project, so the test did not write them."""
    (data, cache), roots = stand_ins
    key = "a" * 24
    user_project = tmp_path / "elsewhere" / "my-model"
    run_folder(
        data / "runs",
        "20250101-120000-train-1a2b",
        user_project,
        roots[1] / ".venv" / "bin" / "python",
    )  # the repo's python: not a project
    before = snapshot([data, cache])
    check_untouched([data, cache], before, roots)  # nothing written: passes
    run_folder(
        data / "runs",
        "20250101-120001-train-3c4d",
        user_project,
        roots[1] / ".venv" / "bin" / "python",
    )
    write(data / "runs" / "20250101-120000-train-1a2b" / "stdout.log", "epoch 1\nepoch 2\n")
    write(
        cache / "envs" / key / ".ready",
        json.dumps(
            {"project": str(user_project), "inputs": {"interpreter": str(roots[1] / "python")}}
        ),
    )
    write(cache / "envs" / key / "projects", f"{user_project}\n")
    write(cache / "envs" / f"{key}.lock", "")
    write(cache / "envs" / ("b" * 24) / "env-7-abc" / "pyvenv.cfg", "")  # half-built: no marker
    write(cache / "repos" / key / ".ready", "https://example.org/me/model.git")
    write(cache / "interpreters.json", json.dumps({"sig": {"realpath": str(roots[1])}}))
    check_untouched([data, cache], before, roots)


@pytest.mark.parametrize("entry", ["run", "env", "env-reused", "mirror"])
def test_guard_fails_a_test_that_writes_to_real_folders(
    stand_ins: tuple[list[Path], list[Path]], tmp_path: Path, entry: str
) -> None:
    (data, cache), roots = stand_ins
    key = "c" * 24
    mine = roots[0] / "test_x0" / "proj"  # a project of the test, under the base temp
    write(cache / "envs" / key / "projects", f"{tmp_path / 'elsewhere'}\n")  # the user's env
    before = snapshot([data, cache])
    check_untouched([data, cache], before, roots)
    if entry == "run":
        run_folder(data / "runs", "20250101-120000-x-0000", mine, Path("/usr/bin/python3"))
    elif entry == "env":
        write(cache / "envs" / ("d" * 24) / ".ready", json.dumps({"project": str(mine)}))
    elif entry == "env-reused":  # the test ran in the user's environment, which notes it
        projects = cache / "envs" / key / "projects"
        with projects.open("a") as fh:
            fh.write(f"{mine}\n")
        stamp = projects.stat().st_mtime_ns + 10**9  # a change even within the clock's tick
        os.utime(projects, ns=(stamp, stamp))
    else:
        write(cache / "repos" / key / ".ready", f"file://{roots[0]}/test_x0/r.git")
    with pytest.raises(pytest.fail.Exception, match="real user folders"):
        check_untouched([data, cache], before, roots)
