"""`runs prune` and `retention:` on real run folders: the newest N of each name stay, a status
or an age narrows it, --dry-run removes nothing, a running run is never removed, and the
index forgets what was removed."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from tests.helpers import TORCHJOB, Env, torchjob, wait_until, write

WAIT = "import os, sys, time\nwhile not os.path.exists(sys.argv[1]):\n    time.sleep(0.02)\n"


def _rows(name: str | None = None) -> list[dict[str, Any]]:
    extra = ["--name", name] if name else []
    res = torchjob("runs", "--json", "--limit", "0", *extra)
    assert res.returncode == 0, res.stderr
    rows: list[dict[str, Any]] = json.loads(res.stdout)
    return rows


def _runs(project: Path, name: str, codes: list[int]) -> None:
    write(project / "exit.py", "import sys\nsys.exit(int(sys.argv[1]))\n")
    for code in codes:
        res = torchjob(
            "run", "-q", "-s", "exit.py", "-p", str(project), "--name", name, "--", str(code)
        )
        assert res.returncode == code, res.stderr


def test_keep_status_dry_run_and_the_index(project: Path, iso: Env) -> None:
    _runs(project, "a", [0, 1, 0, 0, 0])
    _runs(project, "b", [0, 0])
    ids_a = [r["id"] for r in _rows("a")]  # newest first
    assert len(ids_a) == 5
    dry = torchjob("runs", "prune", "--keep", "2", "--name", "a", "--dry-run")
    out = dry.stdout.decode()
    assert dry.returncode == 0, dry.stderr
    assert [line.split()[2] for line in out.splitlines()[:-1]] == ids_a[:1:-1]  # oldest first
    assert out.splitlines()[-1].startswith("would free ") and "(3 runs)" in out
    assert len(_rows("a")) == 5 and all((iso.runs / i).is_dir() for i in ids_a)

    res = torchjob("runs", "prune", "--keep", "2", "--name", "a")
    assert res.returncode == 0, res.stderr
    assert "freed " in res.stdout.decode() and "(3 runs)" in res.stdout.decode()
    assert [r["id"] for r in _rows("a")] == ids_a[:2]  # the index forgot the removed ones
    assert not any((iso.runs / i).exists() for i in ids_a[2:])
    assert len(_rows("b")) == 2  # another name is untouched

    _runs(project, "a", [1])
    failed = torchjob("runs", "prune", "--status", "failed")
    assert failed.returncode == 0 and "(1 run)" in failed.stdout.decode()
    assert [r["status"] for r in _rows()] == ["succeeded"] * 4


def test_older_than_counts_from_the_end(project: Path, iso: Env) -> None:
    """The age is set by rewriting ended_at in run.json: waiting 30 days is not an option."""
    _runs(project, "a", [0, 0])
    old = _rows("a")[1]
    path = iso.runs / old["id"] / "run.json"
    rec = json.loads(path.read_text())
    rec["started_at"], rec["ended_at"] = "2020-01-01T00:00:00+00:00", "2020-01-01T00:01:00+00:00"
    path.write_text(json.dumps(rec))
    res = torchjob("runs", "prune", "--older-than", "30d")
    assert res.returncode == 0, res.stderr
    assert [r["id"] for r in _rows()] == [_rows("a")[0]["id"]] and not path.exists()
    bad = torchjob("runs", "prune", "--older-than", "soon")
    assert bad.returncode == 2 and b"--older-than soon" in bad.stderr
    none = torchjob("runs", "prune", "--name", "a")
    assert none.returncode == 2 and b"needs a policy" in none.stderr and len(_rows()) == 1


def test_a_running_run_is_never_removed(project: Path, iso: Env) -> None:
    gate = iso.tmp / "gate"
    write(
        project / "wait.py",
        "import os, sys, time\nwhile not os.path.exists(sys.argv[1]):\n    time.sleep(0.02)\n",
    )
    cmd = [
        *TORCHJOB,
        "run",
        "-q",
        "-s",
        "wait.py",
        "-p",
        str(project),
        "--name",
        "a",
        "--",
        str(gate),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: any(r["status"] == "running" for r in _rows()), 60, "the run to start")
        res = torchjob("runs", "prune", "--keep", "0")
        assert res.returncode == 0 and res.stdout == b"", res.stdout
        assert [r["status"] for r in _rows()] == ["running"]
    finally:
        gate.touch()
        assert proc.wait(60) == 0


def test_retention_applies_after_each_run(project: Path, iso: Env) -> None:
    write(project / "job.py", "print('ok')\n")
    spec = write(
        project / "job.yaml", "name: nightly\nscript: job.py\nretention: {keep: 2, max_age: 30d}\n"
    )
    _runs(project, "other", [0])
    for _ in range(4):
        res = torchjob("run", "-q", str(spec))
        assert res.returncode == 0, res.stderr
    assert len(_rows("nightly")) == 2 and len(_rows("other")) == 1
    said = torchjob("run", str(spec)).stderr.decode()
    assert "retention: removed 1 older run of nightly" in said, said
    bad = write(project / "bad.yaml", "script: job.py\nretention: {keep: -1}\n")
    res = torchjob("run", str(bad))
    assert res.returncode == 2 and f"{bad}:2: retention.keep".encode() in res.stderr, res.stderr
