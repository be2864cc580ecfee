"""Stopping: signals forwarded to the job's process group, grace then SIGKILL, timeout, and no
process outliving torchjob, even when torchjob itself is SIGKILLed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers import TORCHJOB, Env, alive, gone_within, newest_record, write

# The job starts a grandchild, prints both pids, then sleeps. "stubborn" ignores SIGTERM and
# SIGINT in both processes, so only SIGKILL can stop them.
JOB = r"""
import os, signal, subprocess, sys, time
stubborn = sys.argv[1:] == ["stubborn"]
code = "import signal, time\n"
if stubborn:
    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, signal.SIG_IGN)
    code += "for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):\n"
    code += "    signal.signal(s, signal.SIG_IGN)\n"
g = subprocess.Popen([sys.executable, "-c", code + "time.sleep(600)"])
print(os.getpid(), g.pid, flush=True)
time.sleep(600)
"""


def start(project: Path, *extra: str) -> tuple[subprocess.Popen[bytes], list[int]]:
    write(project / "job.py", JOB)
    proc = subprocess.Popen(
        [*TORCHJOB, "run", "-s", "job.py", "-p", str(project), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()  # the job is running once it has printed its pids
    pids = [int(x) for x in line.split()]
    assert len(pids) == 2 and all(alive(p) for p in pids), line
    return proc, pids


def finish(proc: subprocess.Popen[bytes]) -> tuple[int, bytes]:
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err


@pytest.mark.parametrize(
    ("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130), (signal.SIGHUP, 129)]
)
def test_signal_stops_child_and_grandchild(project: Path, iso: Env, sig: int, code: int) -> None:
    proc, pids = start(project, "--grace", "60")
    t0 = time.monotonic()
    proc.send_signal(sig)
    rc, err = finish(proc)
    assert rc == code, err
    assert time.monotonic() - t0 < 30  # well inside the 60 s grace: no SIGKILL was needed
    assert gone_within(pids, 1.0)
    rec = newest_record(iso.runs, only=True)
    assert rec["status"] == "cancelled"
    assert rec["exit_code"] == code
    assert signal.Signals(sig).name in str(rec["error"])


def test_child_ignoring_sigterm_is_killed_after_grace(project: Path, iso: Env) -> None:
    proc, pids = start(project, "--grace", "1", "--", "stubborn")
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    rc, _ = finish(proc)
    elapsed = time.monotonic() - t0
    assert rc == 143
    assert 1.0 <= elapsed < 10
    assert gone_within(pids, 1.0)
    assert newest_record(iso.runs, only=True)["signal"] == "SIGKILL"


def test_second_ctrl_c_kills_at_once(project: Path, iso: Env) -> None:
    proc, pids = start(project, "--grace", "120", "--", "stubborn")
    assert proc.stderr is not None
    proc.send_signal(signal.SIGINT)
    # Two signals sent back to back may merge into one: wait until the first one is seen.
    while b"stopping the job (SIGINT)" not in (line := proc.stderr.readline()):
        assert line, "torchjob ended without saying it was stopping"
    proc.send_signal(signal.SIGINT)
    rc, _ = finish(proc)  # would take 120 s if the second Ctrl-C were not honoured
    assert rc == 130
    assert gone_within(pids, 1.0)
    assert newest_record(iso.runs, only=True)["status"] == "cancelled"


def test_sigkill_to_torchjob_takes_child_and_grandchild(project: Path, iso: Env) -> None:
    proc, pids = start(project, "--", "stubborn")
    proc.kill()
    proc.communicate(timeout=30)
    assert gone_within(pids, 1.0)
    # torchjob had no chance to write the end
    assert newest_record(iso.runs, only=True)["status"] == "running"


def test_timeout_stops_the_job_with_124(project: Path, iso: Env) -> None:
    proc, pids = start(project, "--timeout", "2", "--grace", "1")
    t0 = time.monotonic()
    rc, err = finish(proc)
    assert rc == 124, err
    assert time.monotonic() - t0 < 2 + 1 + 2
    assert gone_within(pids, 1.0)
    rec = newest_record(iso.runs, only=True)
    assert (rec["status"], rec["exit_code"]) == ("timeout", 124)
    assert b"timed out after 2s" in err


def test_leftover_grandchild_is_killed_when_the_script_exits(project: Path) -> None:
    write(
        project / "bg.py",
        (
            "import subprocess, sys\n"
            "g = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
            "print(g.pid, flush=True)\n"
        ),
    )
    proc = subprocess.Popen(
        [*TORCHJOB, "run", "-s", "bg.py", "-p", str(project)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert gone_within([int(out.split()[0])], 1.0)


def test_lost_run_is_shown_as_lost(project: Path, iso: Env) -> None:
    proc, pids = start(project)
    proc.kill()
    proc.communicate(timeout=30)
    assert gone_within(pids, 1.0)
    res = subprocess.run(
        [*TORCHJOB, "runs", "--json"], capture_output=True, check=True, env=os.environ
    )
    (row,) = json.loads(res.stdout)
    assert row["status"] == "lost"
