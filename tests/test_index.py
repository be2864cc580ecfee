"""The history's index (`<runs-dir>/.index/runs.db`) with real runs: it follows runs that start and
end, folders removed by hand, many runs and readers at once, and it is rebuilt when it is
missing or corrupt; run.json stays the truth."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

from tests.helpers import TORCHJOB, Env, torchjob, wait_until, write


def _listed(*args: str) -> list[dict[str, Any]]:
    res = torchjob("runs", "--limit", "0", "--json", *args, timeout=120)
    assert res.returncode == 0, res.stderr
    data: list[dict[str, Any]] = json.loads(res.stdout)
    return data


def test_fifty_runs_at_once_with_readers_syncing_meanwhile(project: Path, iso: Env) -> None:
    """50 runs start together while five `torchjob runs` sync the index at the same time: no
    reader fails, no row is lost, and every run ends with its own status."""
    write(project / "job.py", "import sys, time\ntime.sleep(0.3)\nsys.exit(int(sys.argv[1]))\n")
    runs = [
        subprocess.Popen(
            [*TORCHJOB, "run", "-q", "-s", "job.py", "-p", str(project), "--", str(i % 3)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for i in range(50)
    ]
    readers = [
        subprocess.Popen(
            [*TORCHJOB, "runs", "--limit", "0", "--json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(5)
    ]
    for reader in readers:
        out, err = reader.communicate(timeout=120)
        assert reader.returncode == 0, err
        json.loads(out)
    codes = sorted(p.wait(120) for p in runs)
    assert codes == sorted(i % 3 for i in range(50))
    listed = _listed()
    assert len(listed) == 50
    assert sorted(r["exit_code"] for r in listed) == codes
    assert {r["status"] for r in listed} == {"succeeded", "failed"}
    failed = _listed("--status", "failed")
    assert len(failed) == sum(1 for c in codes if c)


def test_the_index_follows_the_folders_and_is_rebuilt(project: Path, iso: Env) -> None:
    write(project / "job.py", "")
    for name in ("a", "b", "c"):
        assert torchjob("run", "-q", "-s", "job.py", "--name", name, cwd=project).returncode == 0
    assert [r["name"] for r in _listed()] == ["c", "b", "a"]
    db = iso.runs / ".index" / "runs.db"
    rows = sqlite3.connect(db).execute("SELECT name, status FROM runs ORDER BY sort").fetchall()
    assert rows == [("a", "succeeded"), ("b", "succeeded"), ("c", "succeeded")]
    before = iso.runs.stat().st_mtime_ns
    _listed()
    assert iso.runs.stat().st_mtime_ns == before  # a reader leaves the folder's mtime alone
    shutil.rmtree(next(p for p in iso.runs.iterdir() if "-b-" in p.name))
    assert [r["name"] for r in _listed()] == ["c", "a"]  # a folder removed by hand
    db.write_bytes(b"this is not a database" * 100)
    for side in ("runs.db-wal", "runs.db-shm"):
        (iso.runs / ".index" / side).unlink(missing_ok=True)
    assert [r["name"] for r in _listed()] == ["c", "a"]  # corrupt: rebuilt
    db.unlink()
    assert torchjob("show", "a", "--json").returncode == 0  # missing: rebuilt
    res = torchjob("runs", "--reindex", "--limit", "1")
    assert res.returncode == 0 and b"reindexed 2 runs" in res.stderr
    assert res.stdout.decode().count("\n") == 2


def test_a_running_run_is_seen_ending(project: Path, iso: Env) -> None:
    """A row recorded while its run ran is read again once run.json changes."""
    gate = iso.tmp / "gate"
    write(
        project / "job.py",
        f"import pathlib, time\nwhile not pathlib.Path({str(gate)!r}).exists():\n"
        "    time.sleep(0.02)\n",
    )
    proc = subprocess.Popen(
        [*TORCHJOB, "run", "-q", "-s", "job.py", "-p", str(project)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_until(lambda: _listed() and _listed()[0]["status"] == "running", 60, "the run")
    gate.touch()
    assert proc.wait(60) == 0
    assert _listed()[0]["status"] == "succeeded"
