"""What the user sees while a run sets up: one line per step with its name and time, finished
before the job's first byte (live on a terminal, plain lines off one, inside a group under
GitHub Actions), the header naming what will really run, and the environment line before the
job's output. Real git, real pip and uv from the test wheelhouse."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

from tests.helpers import TORCHJOB, Env, newest_record, torchjob, write
from tests.servers import make_bare_repo
from tests.terminal import Terminal

SHOW = "import tinya\nprint('job says', tinya.VALUE)\n"


def _lines(stderr: bytes) -> list[str]:
    return stderr.decode().splitlines()


def test_plain_step_lines_come_before_the_job_off_a_terminal(
    project: Path, iso: Env, offline: Any
) -> None:
    write(project / "main.py", SHOW)
    write(project / "requirements.txt", "tinyb==1.0\n")  # and tinya 2.0 through it
    res = subprocess.run(  # both streams in one, as a CI log has them
        [*TORCHJOB, "run", "-s", "main.py", "-p", str(project), "--env-manager", "virtualenv"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        check=False,
        timeout=300,
    )
    assert res.returncode == 0, res.stdout
    lines = res.stdout.decode().splitlines()
    starts = [x for x in lines if x.endswith(" ...")]
    ends = [x for x in lines if re.search(r": done in \d+\.\ds$", x)]
    assert starts[:2] == ["torchjob: creating virtualenv ...", "torchjob: installing packages ..."]
    assert "torchjob: installing 2 packages: done in" in "\n".join(ends)  # counted, renamed
    assert len(starts) == len(ends) >= 4  # with the health and dependency checks
    job = lines.index("job says tinya 2.0")
    env = next(i for i, x in enumerate(lines) if x.startswith("torchjob:   environment "))
    assert max(lines.index(x) for x in ends) < env < job  # all before the job's first byte
    assert not any("WARNING" in x or "building:" in x for x in lines)
    quiet = torchjob("run", "-q", "-s", "main.py", "-p", str(project), "--env-manager", "uv")
    assert quiet.returncode == 0 and quiet.stderr == b"" and quiet.stdout == b""


def test_live_steps_on_a_terminal_finish_before_the_job(
    project: Path, iso: Env, offline: Any
) -> None:
    write(project / "main.py", SHOW)
    write(project / "requirements.txt", "tinya==1.0\n")
    env = {**os.environ, "TERM": "xterm-256color"}
    term = Terminal(["run", "-s", "main.py", "-p", str(project), "--env-manager", "uv"], env)
    assert term.wait() == 0
    shown = bytes(term.shown).decode()
    assert re.search(r"✓\x1b\[0m creating the environment \(uv venv\) \(\d+\.\ds\)", shown)
    assert re.search(r"✓\x1b\[0m installing 1 package \(\d+\.\ds\)", shown)
    before, _, after = shown.partition("job says tinya 1.0")
    assert after and "\x1b[K" not in after  # nothing redrawn over the job's output
    assert before.rindex("✓") < before.index("torchjob:   interpreter")


def test_github_actions_group_error_and_summary(project: Path, iso: Env, offline: Any) -> None:
    write(project / "main.py", SHOW)
    write(project / "requirements.txt", "tinya==1.0\n")
    summary = iso.tmp / "summary.md"
    env = {**os.environ, "GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(summary)}
    ok = torchjob("run", "-s", "main.py", "-p", str(project), "--env-manager", "uv", env=env)
    assert ok.returncode == 0
    lines = _lines(ok.stderr)
    group, end = lines.index("::group::torchjob setup"), lines.index("::endgroup::")
    inside = lines[group + 1 : end]
    assert inside and all(x.startswith("torchjob: ") for x in inside)
    assert any(": done in " in x for x in inside)
    assert not any(x.startswith("::error") for x in lines)
    rec = newest_record(iso.runs)
    text = summary.read_text()
    assert f"`{rec['id']}`" in text and "succeeded (exit 0)" in text and "✅" in text
    write(project / "requirements.txt", "nosuchpackage==1.0\n")
    bad = torchjob("run", "-s", "main.py", "-p", str(project), "--env-manager", "uv", env=env)
    assert bad.returncode == 125
    lines = _lines(bad.stderr)
    assert lines.index("::endgroup::") < lines.index(
        next(x for x in lines if x.startswith("::error title=torchjob: main setup_error::"))
    )
    assert "setup_error (exit 125)" in summary.read_text() and "❌" in summary.read_text()


def test_github_summary_of_a_run_without_a_build(project: Path, iso: Env) -> None:
    """No environment was built: the summary names no setup.log (the run has none), and an
    output reads as on the console (`0.1235`, not 0.123456789)."""
    write(
        project / "main.py",
        "import json, os, pathlib\n"
        "out = pathlib.Path(os.environ['TORCHJOB_OUTPUT_DIR'], 'metrics.json')\n"
        "out.write_text(json.dumps({'loss': 0.123456789}))\n",
    )
    summary = iso.tmp / "summary.md"
    env = {**os.environ, "GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(summary)}
    res = torchjob("run", "-s", "main.py", "-p", str(project), env=env)
    assert res.returncode == 0, res.stderr
    run_dir, _ = iso.only_run()
    assert not (run_dir / "setup.log").exists()
    text = summary.read_text()
    assert "| output `loss` | 0.1235 |" in text and "loss=0.1235" in res.stderr.decode()
    assert "`stderr.log`" in text and "setup.log" not in text


def test_a_git_project_says_cloned_then_fetched_and_names_the_ref(tmp_path: Path, iso: Env) -> None:
    make_bare_repo(tmp_path / "r.git", [{"sub/a.py": "print('from git')\n"}])
    url = f"file://{tmp_path / 'r.git'}#sub"
    runs = []
    for _ in range(2):
        res = torchjob("run", "-s", "a.py", "-p", url, "--allow-insecure-source")
        assert res.returncode == 0, res.stderr
        runs.append(_lines(res.stderr))
    first, second = runs
    assert (
        f"torchjob:   project     file://{tmp_path / 'r.git'}#sub @ (the default branch)" in first
    )
    assert any(x.startswith("torchjob: cloning file://") for x in first)
    assert any(re.match(r"torchjob: checking out [0-9a-f]{12} sub/: done", x) for x in first)
    assert any("(main; cloned;" in x for x in first)
    assert any(x.startswith("torchjob: fetching file://") for x in second)
    assert any("(main; fetched;" in x for x in second)


def test_requirements_the_interpreter_as_it_is_will_not_install_are_named(
    project: Path, iso: Env
) -> None:
    write(project / "main.py", "print('ran')\n")
    write(project / "requirements.txt", "tinya==1.0\n")
    res = torchjob("run", "-s", "main.py", "-p", str(project))
    assert res.returncode == 0
    (line,) = [x for x in _lines(res.stderr) if "requirements.txt is not installed" in x]
    assert "--env-manager uv" in line
    (project / "requirements.txt").unlink()
    res = torchjob("run", "-s", "main.py", "-p", str(project))
    assert b"not installed" not in res.stderr
