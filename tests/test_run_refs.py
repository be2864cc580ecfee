"""RUN on the command line: ids, prefixes, 4-hex suffixes, names, `last` and `last~N`; which
reading wins when several could; and that finding a run reads only the run.json files its
folder names point at (a runs folder of thousands of runs stays fast)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tests.helpers import Env, run_records, torchjob, write


def _run(project: Path, name: str, code: int = 0) -> None:
    write(project / "job.py", "import sys\nprint('hello')\nsys.exit(int(sys.argv[1]))\n")
    res = torchjob("run", "-q", "-s", "job.py", "-p", str(project), "--name", name, "--", str(code))
    assert res.returncode == code, res.stderr


def _shown(*args: str) -> dict[str, Any]:
    res = torchjob("show", *args, "--json")
    assert res.returncode == 0, res.stderr
    data: dict[str, Any] = json.loads(res.stdout)
    return data


def _copy(runs: Path, record: dict[str, Any], run_id: str, **changes: Any) -> Path:
    """A run folder made from a real record under another id (and name, start...): lookups
    look at folder names and records only, so a copy is a run to them."""
    folder = runs / run_id
    write(folder / "run.json", json.dumps({**record, "id": run_id, **changes}))
    (folder / "stdout.log").write_bytes(f"{run_id}\n".encode())
    return folder


def _trap(folder: Path) -> None:
    """Make a run's run.json a FIFO: a command that opens it blocks (and the test times out)."""
    (folder / "run.json").unlink()
    os.mkfifo(folder / "run.json")


def test_names_suffixes_prefixes_and_last(project: Path, iso: Env) -> None:
    for name in ("alpha", "my job!", "alpha", "beta"):
        _run(project, name)
    records = sorted(run_records(iso.runs), key=lambda r: (r["started_at"], r["id"]))
    newest_first = [r["id"] for r in reversed(records)]
    alphas = [r["id"] for r in records if r["name"] == "alpha"]

    assert _shown()["id"] == newest_first[0]  # show defaults to last
    assert _shown("last")["id"] == newest_first[0]
    assert [_shown(f"last~{n}")["id"] for n in range(4)] == newest_first
    assert _shown("alpha")["id"] == alphas[-1]  # a name: its newest run
    assert _shown("my job!")["name"] == "my job!"  # the name, not its slug `my-job`
    assert torchjob("show", "my-job").returncode == 2
    for rec in records:
        assert _shown(rec["id"][-4:])["id"] == rec["id"]  # the 4 hex digits at the end
        assert _shown(rec["id"][:-2])["id"] == rec["id"]  # a unique prefix
        assert _shown(rec["id"])["id"] == rec["id"]
    assert torchjob("logs").stdout == b"hello\n"  # logs defaults to last too

    res = torchjob("show", "last~4")
    assert res.returncode == 2 and b"only 4 runs" in res.stderr
    for bad in ("last~x", "nope", ""):
        res = torchjob("show", bad)
        assert res.returncode == 2 and b"RUN is an id" in res.stderr, bad


def test_ambiguity_rules_and_the_candidates_listed(project: Path, iso: Env) -> None:
    _run(project, "seed")
    (record,) = run_records(iso.runs)
    a = _copy(iso.runs, record, "20240101-000000-one-beef", name="one")
    b = _copy(iso.runs, record, "20240102-000000-two-beef", name="two")
    res = torchjob("show", "beef")  # a suffix of two runs: both listed, newest first
    assert res.returncode == 2
    assert f"'beef' matches 2 runs (the end of their ids): {b.name}, {a.name}".encode() in (
        res.stderr
    )
    res = torchjob("show", "2024")  # a prefix of two runs
    assert res.returncode == 2 and b"matches 2 runs (the start of their ids)" in res.stderr

    # A suffix beats a prefix: `2024` ends one id and starts two (a year starts every id).
    c = _copy(iso.runs, record, "20230101-000000-three-2024", name="three")
    assert _shown("2024")["id"] == c.name

    # A name beats an id prefix or suffix; stderr says what else it matched.
    d = _copy(iso.runs, record, "20220101-000000-202-abcd", name="202")
    res = torchjob("show", "202", "--json")
    assert res.returncode == 0 and json.loads(res.stdout)["id"] == d.name
    note = res.stderr.decode()
    assert "'202' is a run name" in note and record["id"] in note and a.name in note

    # An exact id beats everything, even a name that equals it.
    _copy(iso.runs, record, "20210101-000000-x-0001", name=b.name)
    assert _shown(b.name)["id"] == b.name


def test_a_name_is_confirmed_from_run_json_not_the_slug(project: Path, iso: Env) -> None:
    _run(project, "seed")
    (record,) = run_records(iso.runs)
    _copy(iso.runs, record, "20240101-000000-a-b-1111", name="a b")
    _copy(iso.runs, record, "20240102-000000-a-b-2222", name="a-b")
    assert _shown("a b")["id"] == "20240101-000000-a-b-1111"
    assert _shown("a-b")["id"] == "20240102-000000-a-b-2222"


def test_lookups_and_runs_read_only_the_records_they_need(project: Path, iso: Env) -> None:
    """3,000 runs; the old ones' run.json are FIFOs, which block whoever opens them: `last`,
    `last~N`, a name, a suffix and `runs --limit` must answer without touching them."""
    _run(project, "seed")
    (record,) = run_records(iso.runs)
    old = [
        _copy(iso.runs, record, f"20200101-{n // 60:04d}{n % 60:02d}-old-{n:04x}", name="old")
        for n in range(3000)
    ]
    for folder in old[:-1]:
        _trap(folder)  # the newest "old" run stays readable: `show old` must find it
    new = [_copy(iso.runs, record, f"20250101-00000{n}-new-aa0{n}", name="new") for n in range(3)]
    res = torchjob("runs", "--limit", "3", "--json", timeout=30)
    assert [r["id"] for r in json.loads(res.stdout)] == [record["id"], new[2].name, new[1].name]
    assert _shown("last~2")["id"] == new[1].name
    assert torchjob("show", "new", "--json", timeout=30).returncode == 0
    assert _shown("aa01")["id"] == new[1].name
    assert _shown("old")["id"] == old[-1].name  # the newest of 3,000 same-named runs
    table = torchjob("runs", "--name", "new", timeout=30).stdout.decode().splitlines()
    assert [line.split()[0] for line in table[1:]] == [f.name for f in reversed(new)]
