"""`concurrency:` with two real runs of one name at once: forbid refuses (75, nothing run),
queue waits for the running one, replace stops it cleanly first, allow starts beside it; a
holder killed with SIGKILL never blocks the next run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

from tests.helpers import TORCHJOB, Env, torchjob, wait_until, write

# Runs until its gate file exists; says when it started and ended.
JOB = """
import pathlib, sys, time
gate, log = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
log.open("a").write(f"start {sys.argv[3]} {time.time()}\\n")
while not gate.exists():
    time.sleep(0.02)
log.open("a").write(f"end {sys.argv[3]} {time.time()}\\n")
"""


def _first(project: Path, iso: Env, gate: Path, log: Path) -> subprocess.Popen[bytes]:
    """The running one: `nightly`, held until the gate opens."""
    write(project / "job.py", JOB)
    base = [*TORCHJOB, "run", "-s", "job.py", "-p", str(project), "--name", "nightly"]
    proc = subprocess.Popen(
        [*base, "--", str(gate), str(log), "first"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    wait_until(lambda: log.exists() and "start first" in log.read_text(), 60, "the first run")
    return proc


def _second(project: Path, gate: Path, log: Path, policy: str) -> list[str]:
    base = [*TORCHJOB, "run", "-s", "job.py", "-p", str(project), "--name", "nightly"]
    return [*base, "--concurrency", policy, "--", str(gate), str(log), "second"]


def _records(iso: Env) -> list[dict[str, Any]]:
    found = [json.loads(p.read_text()) for p in iso.runs.glob("*/run.json")]
    return sorted(found, key=lambda r: r["started_at"])


def test_forbid_refuses_with_75_and_runs_nothing(project: Path, iso: Env) -> None:
    gate, log = iso.tmp / "gate", iso.tmp / "log"
    first = _first(project, iso, gate, log)
    res = subprocess.run(_second(project, gate, log, "forbid"), capture_output=True, timeout=60)
    assert res.returncode == 75, res.stderr
    err = res.stderr.decode()
    assert "a run named 'nightly' is running" in err and err.count("\n") == 1
    assert len(_records(iso)) == 1 and "second" not in log.read_text()
    gate.touch()
    assert first.wait(60) == 0


def test_queue_waits_for_the_running_one(project: Path, iso: Env) -> None:
    gate, log = iso.tmp / "gate", iso.tmp / "log"
    first = _first(project, iso, gate, log)
    second = subprocess.Popen(
        _second(project, gate, log, "queue"), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert second.stderr is not None
    line = second.stderr.readline().decode()
    assert "waiting for" in line and "(concurrency: queue)" in line, line
    assert len(_records(iso)) == 1  # it has not started
    gate.touch()
    assert first.wait(60) == 0 and second.wait(60) == 0
    events = [line.split() for line in log.read_text().splitlines()]
    assert [e[:2] for e in events] == [
        ["start", "first"],
        ["end", "first"],
        ["start", "second"],
        ["end", "second"],
    ]


def test_replace_stops_the_running_one_first(project: Path, iso: Env) -> None:
    gate, log = iso.tmp / "gate", iso.tmp / "log"
    first = _first(project, iso, gate, log)
    second = subprocess.Popen(
        _second(project, gate, log, "replace"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    assert first.wait(60) == 128 + signal.SIGTERM
    wait_until(lambda: "start second" in log.read_text(), 60, "the second run to start")
    gate.touch()
    assert second.wait(60) == 0
    statuses = [r["status"] for r in _records(iso)]
    assert statuses == ["cancelled", "succeeded"]


def test_allow_runs_beside_and_a_killed_holder_blocks_nothing(project: Path, iso: Env) -> None:
    gate, log = iso.tmp / "gate", iso.tmp / "log"
    first = _first(project, iso, gate, log)
    second = subprocess.Popen(
        _second(project, gate, log, "allow"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    wait_until(lambda: "start second" in log.read_text(), 60, "the second run beside it")
    os.kill(first.pid, signal.SIGKILL)  # its lock goes with it
    first.wait(60)
    gate.touch()
    assert second.wait(60) == 0
    res = subprocess.run(_second(project, gate, log, "forbid"), capture_output=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert torchjob("run", "-s", "job.py", "--concurrency", "sometimes").returncode == 2
