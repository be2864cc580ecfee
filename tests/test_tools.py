"""tools.run_tool, the one way torchjob runs git, pip and the other setup tools, and the rule
that every tool and everything it starts dies with torchjob, even after kill -9."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import TORCHJOB, Env, alive, gone_within, wait_until, write
from tests.servers import make_bare_repo
from torchrun_cli.tools import ToolFailed, exited_within, run_tool


def test_exited_within_sees_an_exit_and_leaves_the_process_to_reap() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    assert exited_within(proc, 60) is True
    assert proc.returncode is None  # not reaped by exited_within
    assert proc.wait() == 3


def test_exited_within_reports_a_process_still_running() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert exited_within(proc, 0.2) is False
        assert alive(proc.pid)
    finally:
        proc.kill()
        proc.wait()


def test_run_tool_returns_masked_output_and_logs_the_command(tmp_path: Path) -> None:
    log = tmp_path / "setup.log"
    out = run_tool(
        [sys.executable, "-c", "import sys; print('tok=s3cr3tvalue'); sys.stderr.write('warn\\n')"],
        timeout=60,
        log=log,
        secrets=["s3cr3tvalue"],
    )
    assert out == "tok=****\n"  # stdout only: what callers parse
    text = log.read_text()
    assert "s3cr3tvalue" not in text and "tok=****" in text and "warn" in text
    assert text.rstrip().endswith("s]") and "[exit 0 after" in text


def test_run_tool_failure_carries_the_tail(tmp_path: Path) -> None:
    with pytest.raises(ToolFailed) as info:
        run_tool(
            [sys.executable, "-c", "print('\\n'.join(map(str, range(50)))); raise SystemExit(4)"],
            timeout=60,
            log=None,
        )
    assert info.value.returncode == 4 and not info.value.timed_out
    assert info.value.tail().splitlines() == [str(n) for n in range(30, 50)]


def test_run_tool_time_limit_kills_the_whole_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild"
    script = (
        "import os, subprocess, sys, time\n"
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
        f"open({str(pidfile)!r}, 'w').write(str(p.pid))\n"
        "print('started', flush=True)\n"
        "time.sleep(120)\n"
    )
    with pytest.raises(ToolFailed) as info:
        run_tool([sys.executable, "-c", script], timeout=3, log=None)
    assert info.value.timed_out
    assert gone_within([int(pidfile.read_text())], 30)


def test_stderr_is_never_parsed_as_output(tmp_path: Path) -> None:
    """GIT_TRACE=1 writes trace lines to stderr: they used to be read as a commit id, so every
    git-source run exited 125. Both streams still reach setup.log."""
    log = tmp_path / "setup.log"
    out = run_tool(["git", "--version"], timeout=60, log=log, env={**os.environ, "GIT_TRACE": "1"})
    assert out.startswith("git version ") and out.count("\n") == 1
    assert "trace: " in log.read_text()


def _pids(pidfile: Path) -> list[int]:
    text = pidfile.read_text() if pidfile.exists() else ""
    return [int(x) for x in text.split()]


def _kill_torchjob_when(pidfile: Path, argv: list[str], env: dict[str, str]) -> list[int]:
    """Start torchjob, SIGKILL it once the tool's descendant has written its pid; the pids."""
    proc = subprocess.Popen(
        [*TORCHJOB, *argv], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_until(lambda: _pids(pidfile) or proc.poll() is not None, 120, "the tool to start")
        assert proc.poll() is None, "torchjob ended before the tool started"
    finally:
        proc.kill()
        proc.wait()
    return _pids(pidfile)


def _processes_naming(text: str) -> list[int]:
    """Live processes whose command line names text (the dead run's folder, say)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if text.encode() in cmdline and alive(int(entry.name)):
                found.append(int(entry.name))
    return found


def test_kill_9_during_an_sdist_build_takes_the_build_backend(
    project: Path, iso: Env, offline: Any
) -> None:
    """pip runs the build backend in a process of its own: it outlived a killed torchjob."""
    pidfile = iso.tmp / "backend.pid"
    write(project / "main.py", "print('never')\n")
    write(project / "requirements.txt", "tinyslow==1.0\n")
    pids = _kill_torchjob_when(
        pidfile,
        ["run", "-s", "main.py", "-p", str(project), "--env-manager", "virtualenv"],
        {**offline, "TINYSLOW_PIDFILE": str(pidfile)},
    )
    assert gone_within(pids, 10)
    assert wait_until(lambda: not _processes_naming(str(iso.home)), 10, "pip to be gone")


def _slow_global_config(tmp: Path, pidfile: Path, section: str, name: str) -> dict[str, str]:
    """A user's global git config whose setting runs a command that records its pid and
    waits: a real git feature, used here to hold git in the middle of its work."""
    config = write(
        tmp / "gitconfig",
        f"[{section}]\n"  # quoted: `;` starts a comment
        f"\t{name} = \"sh -c 'echo $$ >> {pidfile}; exec sleep 600'\"\n",
    )
    return {**os.environ, "GIT_CONFIG_GLOBAL": str(config)}


def test_kill_9_during_a_checkout_takes_git_and_its_filter(tmp_path: Path, iso: Env) -> None:
    """`git read-tree -u` ran without the die-with-parent guard and kept writing the dead run's
    src/; here a smudge filter (from the user's global config) holds it mid-checkout."""
    make_bare_repo(
        tmp_path / "r.git", [{"a.py": "print(1)\n", ".gitattributes": "*.py filter=slow\n"}]
    )
    pidfile = tmp_path / "filter.pid"
    env = _slow_global_config(tmp_path, pidfile, 'filter "slow"', "smudge")
    pids = _kill_torchjob_when(
        pidfile,
        ["run", "-s", "a.py", "-p", f"file://{tmp_path}/r.git", "--allow-insecure-source"],
        env,
    )
    assert gone_within(pids, 10)
    runs = str(iso.runs)
    assert wait_until(lambda: not _processes_naming(runs), 10, "git read-tree to be gone")


def test_kill_9_during_a_clone_takes_upload_pack(tmp_path: Path, iso: Env) -> None:
    """A file:// clone runs git-upload-pack and pack-objects as git's children: they outlived
    a killed torchjob. uploadpack.packObjectsHook (global config) holds the clone here."""
    make_bare_repo(tmp_path / "r.git", [{"a.py": "print(1)\n"}])
    pidfile = tmp_path / "hook.pid"
    env = _slow_global_config(tmp_path, pidfile, "uploadpack", "packObjectsHook")
    pids = _kill_torchjob_when(
        pidfile,
        ["run", "-s", "a.py", "-p", f"file://{tmp_path}/r.git", "--allow-insecure-source"],
        env,
    )
    assert gone_within(pids, 10)
    assert wait_until(
        lambda: not _processes_naming(str(tmp_path / "r.git")), 10, "git-upload-pack to be gone"
    )
