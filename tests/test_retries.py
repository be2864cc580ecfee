"""`retries:` with real processes: attempts inside one run, each recorded, the delays and their
backoff as lower bounds, what is retried and what never is, and a resume from the attempt
before."""

from __future__ import annotations

import json
import signal
import subprocess
from datetime import datetime
from pathlib import Path
from typing import Any

from tests.helpers import TORCHJOB, Env, torchjob, wait_until, write

# Fails until its count reaches argv[2]; says which attempt torchjob says it is.
FLAKY = """
import os, pathlib, sys
counter = pathlib.Path(sys.argv[1])
n = int(counter.read_text()) + 1 if counter.exists() else 1
counter.write_text(str(n))
resume = os.environ.get("TORCHJOB_RESUME_FROM")
print("try", n, "attempt", os.environ["TORCHJOB_ATTEMPT"], "resume", resume)
model = pathlib.Path(os.environ["TORCHJOB_MODEL_DIR"])
(model / f"ckpt-{n}.pt").write_text(str(n))
sys.exit(0 if n >= int(sys.argv[2]) else 3)
"""


def _run(project: Path, iso: Env, spec: str, *flags: str) -> tuple[int, dict[str, Any], str]:
    write(project / "flaky.py", FLAKY)
    path = write(project / "job.yaml", spec)
    res = torchjob("run", str(path), *flags)
    found = [json.loads(p.read_text()) for p in iso.runs.glob("*/run.json")]
    rec = max(found, key=lambda r: r["started_at"])
    log = (iso.runs / rec["id"] / "stdout.log").read_text()
    return res.returncode, rec, log


def _at(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def test_a_flaky_job_succeeds_on_its_third_attempt_after_the_backoff(
    project: Path, iso: Env
) -> None:
    counter = iso.tmp / "count"
    code, rec, log = _run(
        project,
        iso,
        "script: flaky.py\n"
        f"args: [{json.dumps(str(counter))}, '3']\n"
        "retries: {count: 3, delay: 0.3s, backoff: 2, on: [failed]}\n",
    )
    assert code == 0 and rec["status"] == "succeeded"
    tries = rec["attempts"]
    assert [(a["attempt"], a["status"], a["exit_code"]) for a in tries] == [
        (1, "failed", 3),
        (2, "failed", 3),
        (3, "succeeded", 0),
    ]
    gap1 = _at(tries[1]["started_at"]) - _at(tries[0]["started_at"]) - tries[0]["duration_s"]
    gap2 = _at(tries[2]["started_at"]) - _at(tries[1]["started_at"]) - tries[1]["duration_s"]
    assert gap1 >= 0.3 - 0.01 and gap2 >= 0.6 - 0.01  # the delay, then twice it
    assert [line.split()[3] for line in log.splitlines() if line.startswith("try")] == [
        "1",
        "2",
        "3",
    ]
    assert "--- torchjob: attempt 1 failed (exit 3); attempt 2 of 4 in 0.3s ---" in log


def test_the_last_attempt_gives_the_status_and_a_bare_number_is_the_count(
    project: Path, iso: Env
) -> None:
    counter = iso.tmp / "count"
    code, rec, _ = _run(
        project, iso, f"script: flaky.py\nargs: [{json.dumps(str(counter))}, '9']\nretries: 1\n"
    )
    assert code == 3 and rec["status"] == "failed"
    assert len(rec["attempts"]) == 2 and counter.read_text() == "2"


def test_retries_from_the_command_line_and_a_resume_from_the_attempt_before(
    project: Path, iso: Env
) -> None:
    counter = iso.tmp / "count"
    first = _run(project, iso, f"script: flaky.py\nargs: [{json.dumps(str(counter))}, '1']\n")
    assert first[0] == 0  # it leaves ckpt-1.pt in its model folder
    code, rec, log = _run(
        project,
        iso,
        f"script: flaky.py\nargs: [{json.dumps(str(counter))}, '3']\nresume_from: last\n",
        "--retries",
        "2",
    )
    assert code == 0 and len(rec["attempts"]) == 2
    tries = [line.split() for line in log.splitlines() if line.startswith("try")]
    assert tries[0][5] == str(iso.runs / first[1]["id"] / "model" / "ckpt-1.pt")
    assert tries[1][5] == str(iso.runs / rec["id"] / "model" / "ckpt-2.pt")


def test_setup_errors_are_retried_only_when_asked(project: Path, iso: Env) -> None:
    spec = "script: x.py\nproject: file:///nonexistent/repo.git\nallow_insecure_source: true\n"
    code, rec, _ = _run(project, iso, spec + "retries: 2\n")
    assert code == 125 and rec["status"] == "setup_error" and len(rec["attempts"]) == 1
    for run in iso.runs.iterdir():
        for item in sorted(run.rglob("*"), reverse=True):
            item.unlink() if item.is_file() else item.rmdir()
        run.rmdir()
    code, rec, _ = _run(project, iso, spec + "retries: {count: 2, on: [setup_error]}\n")
    assert code == 125 and [a["status"] for a in rec["attempts"]] == ["setup_error"] * 3


def test_a_stop_during_the_delay_ends_the_run_without_another_attempt(
    project: Path, iso: Env
) -> None:
    counter = iso.tmp / "count"
    write(project / "flaky.py", FLAKY)
    spec = write(
        project / "job.yaml",
        f"script: flaky.py\nargs: [{json.dumps(str(counter))}, '9']\n"
        "retries: {count: 5, delay: 60s}\n",
    )
    proc = subprocess.Popen(
        [*TORCHJOB, "run", str(spec)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )

    def waiting() -> bool:
        logs = list(iso.runs.glob("*/stdout.log"))
        return bool(logs) and "attempt 2 of 6 in 60s" in logs[0].read_text()

    wait_until(waiting, 60, "the first attempt to fail")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + signal.SIGTERM, err.decode()
    rec = json.loads(next(iso.runs.glob("*/run.json")).read_text())
    assert rec["status"] == "cancelled" and "before attempt 2" in rec["error"]
    assert counter.read_text() == "1"
