"""proc.run_tool, the one way torchjob runs git, pip and the other setup tools."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_signals import alive, gone_within
from torchrun_cli.proc import ToolFailed, exited_within, run_tool


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
    out = run_tool([sys.executable, "-c", "import sys; print('tok=s3cr3tvalue'); "
                    "sys.stderr.write('warn\\n')"], timeout=60, log=log,
                   secrets=["s3cr3tvalue"])
    assert "tok=****" in out and "warn" in out and "s3cr3tvalue" not in out
    text = log.read_text()
    assert "s3cr3tvalue" not in text
    assert text.rstrip().endswith("s]") and "[exit 0 after" in text


def test_run_tool_failure_carries_the_tail(tmp_path: Path) -> None:
    with pytest.raises(ToolFailed) as info:
        run_tool([sys.executable, "-c", "print('\\n'.join(map(str, range(50)))); "
                  "raise SystemExit(4)"], timeout=60, log=None)
    assert info.value.returncode == 4 and not info.value.timed_out
    assert info.value.tail().splitlines() == [str(n) for n in range(30, 50)]


def test_run_tool_time_limit_kills_the_whole_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild"
    script = ("import os, subprocess, sys, time\n"
              "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
              f"open({str(pidfile)!r}, 'w').write(str(p.pid))\n"
              "print('started', flush=True)\n"
              "time.sleep(120)\n")
    with pytest.raises(ToolFailed) as info:
        run_tool([sys.executable, "-c", script], timeout=3, log=None, die_with_parent=True)
    assert info.value.timed_out
    assert gone_within([int(pidfile.read_text())], 30)
