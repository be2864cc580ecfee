"""The exit-status table of DESIGN.md, with real child processes."""

from __future__ import annotations

import os
import re
import signal
import stat
import sys
from pathlib import Path

import pytest

from tests.helpers import Env, torchjob, write


@pytest.mark.parametrize("code", [0, 1, 3, 42, 255])
def test_script_exit_status_is_ours(project: Path, iso: Env, code: int) -> None:
    write(project / "main.py", f"import sys\nsys.exit({code})\n")
    res = torchjob("run", "-s", "main.py", "-p", str(project))
    assert res.returncode == code
    _, rec = iso.only_run()
    assert rec["exit_code"] == code
    assert rec["status"] == ("succeeded" if code == 0 else "failed")
    assert rec["signal"] is None


@pytest.mark.parametrize("sig", [signal.SIGSEGV, signal.SIGKILL])
def test_death_by_signal_is_128_plus_n(project: Path, iso: Env, sig: int) -> None:
    write(project / "main.py", f"import os\nos.kill(os.getpid(), {int(sig)})\n")
    res = torchjob("run", "-s", "main.py", "-p", str(project))
    assert res.returncode == 128 + sig
    _, rec = iso.only_run()
    assert rec["status"] == "failed"
    assert rec["signal"] == signal.Signals(sig).name
    assert f"killed by {signal.Signals(sig).name}" in res.stderr.decode()


def test_missing_script_is_127(project: Path, iso: Env) -> None:
    res = torchjob("run", "-s", "nope.py", "-p", str(project))
    assert res.returncode == 127
    assert b"Traceback" not in res.stderr
    run_dir, rec = iso.only_run()
    assert (rec["status"], rec["exit_code"], rec["phase"]) == ("failed", 127, "launch")
    *_, why, last = res.stderr.decode().splitlines()  # why on its own line, then the status
    assert why.startswith("torchjob: script not found: ") and "; fix: check `script`" in why
    assert re.fullmatch(
        rf"torchjob: failed in \d+\.\d\ds \(exit 127\); logs: {re.escape(str(run_dir))}", last
    )


def test_script_that_is_not_a_file_is_126(project: Path, iso: Env) -> None:
    (project / "pkg.py").mkdir()
    res = torchjob("run", "-s", "pkg.py", "-p", str(project))
    assert res.returncode == 126
    assert b"not a readable file" in res.stderr


def test_missing_interpreter_is_127(project: Path, iso: Env) -> None:
    write(project / "main.py", "print('never')\n")
    for python in (str(project / "no-such-python"), "no-such-python-anywhere"):
        res = torchjob("run", "-s", "main.py", "-p", str(project), "--python", python)
        assert res.returncode == 127, res.stderr
        assert b"interpreter not found" in res.stderr
    assert all(not (d / "stdout.log").read_bytes() for d in iso.run_dirs())


def test_non_executable_interpreter_is_126(project: Path) -> None:
    write(project / "main.py", "print('never')\n")
    fake = write(project / "python", "#!/bin/sh\n")
    fake.chmod(stat.S_IRUSR | stat.S_IWUSR)
    res = torchjob("run", "-s", "main.py", "-p", str(project), "--python", str(fake))
    assert res.returncode == 126
    assert b"not executable" in res.stderr


def test_python_launcher_variable_chooses_the_interpreter(project: Path, iso: Env) -> None:
    """$PYTHON_LAUNCHER (DolphinScheduler's variable) is used when no flag or key names one."""
    write(project / "main.py", "import sys\nprint(sys.executable)\n")
    launcher = write(iso.tmp / "bin" / "mypython", f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    launcher.chmod(0o755)
    env = {**os.environ, "PYTHON_LAUNCHER": str(launcher)}
    res = torchjob("run", "-s", "main.py", "-p", str(project), env=env)
    assert res.returncode == 0, res.stderr
    _, rec = iso.only_run()
    assert rec["interpreter"] == str(launcher)
    res = torchjob("run", "-s", "main.py", "-p", str(project), "--python", sys.executable, env=env)
    assert res.returncode == 0
    assert len(iso.run_dirs()) == 2
    assert res.stdout.strip() == os.fsencode(sys.executable)
