"""The README's commands and CI agree, and the isolation fixture really catches writes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import check_untouched, snapshot

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command() -> None:
    block = re.search(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert block is not None
    install_and_run, test_command = block.group(1).strip().splitlines()[:2]
    assert "torchjob run examples/mnist/job.yaml" in install_and_run
    assert "pytest" in test_command
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_command in ci_lines


def test_guard_fails_a_test_that_writes_to_real_folders(tmp_path: Path) -> None:
    real = tmp_path / "real-data"
    real.mkdir()
    before = snapshot([real, tmp_path / "real-cache"])
    check_untouched([real, tmp_path / "real-cache"], before)  # nothing written: passes
    (real / "runs").mkdir()
    with pytest.raises(pytest.fail.Exception, match="real user folders"):
        check_untouched([real, tmp_path / "real-cache"], before)
