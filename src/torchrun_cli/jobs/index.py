"""The history's index: `<runs-dir>/.index/runs.db`, SQLite (the standard library's, WAL mode), a
row per run and pipeline folder (id, name, status, times, exit, outputs, params) in the order
`runs` lists them, so `runs --limit 20`, `show last` and `show NAME` read ~20 rows and ~20
run.json files whatever the number of runs.

run.json stays the truth; the index is kept up to date by its readers, not by runs: a run pays
nothing for it. Each reader first syncs: when the runs folder's mtime moved (a folder came or
went), its names are compared with the rows; rows still `running` (or whose folder had no
readable record yet) are read again when their record file changed. A missing or corrupt
index is rebuilt (`runs --reindex` does it on demand); concurrent readers serialise their
syncs in one transaction, and every write is an upsert of what run.json says. The database
sits in a folder of its own: SQLite makes and removes its -wal and -shm files beside it on every
connection, which in the runs folder itself would move the mtime each reader looks at (every
`runs` then rescanned 100,000 names). A folder's mtime moves in coarse ticks, so a stamp younger
than SETTLE_NS is not kept: the next reader compares the names again.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torchrun_cli.pipeline_record import RECORD as PIPELINE_JSON
from torchrun_cli.pipeline_record import PipelineRecord, read_listed
from torchrun_cli.record import RunRecord

if TYPE_CHECKING:
    import sqlite3

FILE = ".index/runs.db"
SETTLE_NS = 2_000_000_000  # a runs folder mtime this young may still hide a change
SCHEMA = "1"
_ID = re.compile(r"(\d{8}-\d{6})-(.+)-([0-9a-f]{4})")
PENDING = "pending"  # a folder without a readable record yet (a run being created)
_COLUMNS = (
    "id, kind, name, status, sort, started_at, ended_at, duration_s, exit_code, host, pid, "
    "pid_start, detached, outputs, params, mtime_ns"
)
_TABLES = f"""
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS runs({_COLUMNS}, PRIMARY KEY (id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS runs_sort ON runs(sort);
CREATE INDEX IF NOT EXISTS runs_name ON runs(name, sort);
CREATE INDEX IF NOT EXISTS runs_status ON runs(status, sort);
"""


class Unusable(Exception):
    """The index cannot be used here (a read-only runs folder): the caller scans instead."""


def sort_key(folder: str, started_at: str) -> str:
    """How `runs` orders: the UTC second in the folder's name, then started_at, then the id
    (a folder whose name carries no second sorts by its started_at)."""
    m = _ID.fullmatch(folder)
    second = m.group(1).replace("-", "") if m else re.sub(r"\D", "", started_at)[:14]
    return f"{second}|{started_at}|{folder}"


@contextlib.contextmanager
def fresh(runs_dir: Path) -> Iterator[sqlite3.Connection]:
    """The index of a runs folder, synced with it. Raises Unusable when it cannot be kept."""
    import sqlite3  # measured: 4.5 ms, paid by the commands that read the history only

    if not runs_dir.is_dir():
        raise Unusable(f"{runs_dir} is not a folder")
    path = runs_dir / FILE
    path.parent.mkdir(exist_ok=True)
    for attempt in range(2):
        try:
            db = sqlite3.connect(path, timeout=30, isolation_level=None)
        except sqlite3.Error as exc:
            raise Unusable(str(exc)) from None
        try:
            _prepare(db)
            _sync(db, runs_dir)
            break
        except sqlite3.DatabaseError as exc:
            db.close()
            if attempt or (isinstance(exc, sqlite3.OperationalError) and _readonly(exc)):
                raise Unusable(str(exc)) from None
            _remove(path)  # corrupt: rebuilt from the run folders
    try:
        yield db
    finally:
        db.close()


def _remove(path: Path) -> None:
    for leftover in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        leftover.unlink(missing_ok=True)


def _readonly(exc: Exception) -> bool:
    return "readonly" in str(exc) or "unable to open" in str(exc)


def _prepare(db: sqlite3.Connection) -> None:
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.executescript(_TABLES)
    found = db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
    if found is None or found[0] != SCHEMA:
        db.executescript("BEGIN IMMEDIATE; DELETE FROM runs; DELETE FROM meta; COMMIT;")
        db.execute("INSERT OR REPLACE INTO meta VALUES ('schema', ?)", (SCHEMA,))


def _sync(db: sqlite3.Connection, runs_dir: Path) -> None:
    """Bring the rows up to date with the folders (see the module's docstring)."""
    stamp = str(os.stat(runs_dir).st_mtime_ns)  # before the scan: a folder made during it
    seen = db.execute("SELECT value FROM meta WHERE key='dir_mtime'").fetchone()  # moves it
    changed = seen is None or seen[0] != stamp
    recheck = db.execute(
        "SELECT id, mtime_ns FROM runs WHERE status IN ('running', ?)", (PENDING,)
    ).fetchall()
    stale = [(i, m) for i, m in recheck if _mtime(runs_dir / i) != m]
    if not changed and not stale:
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        if changed:
            names = {e.name for e in os.scandir(runs_dir) if e.name[:1] != "." and e.is_dir()}
            known = {row[0] for row in db.execute("SELECT id FROM runs")}
            db.executemany("DELETE FROM runs WHERE id=?", [(i,) for i in known - names])
            _put(db, runs_dir, sorted(names - known))
            if time.time_ns() - int(stamp) > SETTLE_NS:
                db.execute("INSERT OR REPLACE INTO meta VALUES ('dir_mtime', ?)", (stamp,))
            else:  # the folder may change again within its mtime's tick: compare next time
                db.execute("DELETE FROM meta WHERE key='dir_mtime'")
        _put(db, runs_dir, [i for i, _ in stale])
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def _mtime(folder: Path) -> int:
    for name in ("run.json", PIPELINE_JSON):
        with contextlib.suppress(OSError):
            return os.stat(folder / name).st_mtime_ns
    return 0


def _put(db: sqlite3.Connection, runs_dir: Path, ids: Sequence[str]) -> None:
    rows = []
    for folder in ids:
        mtime = _mtime(runs_dir / folder)
        try:
            rec = read_listed(runs_dir / folder)
        except (OSError, ValueError, TypeError):
            rows.append(_pending(folder, mtime))
            continue
        rows.append(row(folder, rec, mtime))
    db.executemany(_UPSERT, rows)


_MARKS = ", ".join("?" * len(_COLUMNS.split(", ")))
_UPSERT = f"INSERT OR REPLACE INTO runs ({_COLUMNS}) VALUES ({_MARKS})"  # noqa: S608 - constants


def _pending(folder: str, mtime: int) -> tuple[Any, ...]:
    sort = sort_key(folder, "")
    return (
        folder,
        PENDING,
        "",
        PENDING,
        sort,
        "",
        None,
        None,
        None,
        "",
        0,
        0,
        0,
        "{}",
        "{}",
        mtime,
    )


def row(folder: str, rec: RunRecord | PipelineRecord, mtime: int) -> tuple[Any, ...]:
    """The index's row of a record."""
    kind = "pipeline" if isinstance(rec, PipelineRecord) else "run"
    params = rec.params if isinstance(rec, RunRecord) else {}
    return (
        folder,
        kind,
        rec.name,
        rec.status.value,
        sort_key(folder, rec.started_at),
        rec.started_at,
        rec.ended_at,
        rec.duration_s,
        rec.exit_code,
        rec.host,
        rec.pid,
        rec.pid_start,
        int(bool(rec.detached)),
        json.dumps(rec.outputs, default=str),
        json.dumps(params, default=str),
        mtime,
    )


def ids(
    db: sqlite3.Connection,
    name: str | None = None,
    status: str | None = None,
    limit: int = 0,
    offset: int = 0,
    kind: str | None = None,
    by: str | None = None,
) -> list[str]:
    """Folder ids newest first (or by the output `by`, `-by` for the greatest first, runs
    without it last), by name, recorded status (a `lost` run is recorded as `running`: ask for
    running and judge each) and kind (run, pipeline)."""
    where: list[str] = ["kind != ?"]
    args: list[Any] = [PENDING]
    if kind is not None:
        where.append("kind = ?")
        args.append(kind)
    if name is not None:
        where.append("name = ?")
        args.append(name)
    if status is not None:
        where.append("status = ?")
        args.append(status)
    sql = "SELECT id FROM runs WHERE " + " AND ".join(where)  # noqa: S608 - constants; bound
    if by:
        key = json.dumps(by.lstrip("-"))  # a JSON path's quoted member: any name is safe
        sql += " ORDER BY json_extract(outputs, ?) IS NULL, json_extract(outputs, ?)"
        sql += " DESC, sort DESC" if by.startswith("-") else ", sort DESC"
        args += [f"$.{key}", f"$.{key}"]
    else:
        sql += " ORDER BY sort DESC"
    if limit:
        sql += " LIMIT ? OFFSET ?"
        args += [int(limit), int(offset)]
    return [r[0] for r in db.execute(sql, args)]


def matching(db: sqlite3.Connection, prefix: str = "", suffix: str = "") -> list[str]:
    """Ids that start with `prefix` (and end with `suffix`), newest first; folders without a
    readable record too (RUN names a folder: what is wrong with it is said then)."""
    like = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    sql = "SELECT id FROM runs WHERE id LIKE ? ESCAPE '\\'"
    args: list[str] = [like]
    if suffix:
        sql += " AND substr(id, -4) = ?"
        args.append(suffix)
    return [r[0] for r in db.execute(sql + " ORDER BY sort DESC", args)]


def names(db: sqlite3.Connection, prefix: str, limit: int) -> list[str]:
    """Run names that start with `prefix`, the newest run's first."""
    like = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    sql = (
        "SELECT name FROM runs WHERE name LIKE ? ESCAPE '\\' AND kind != ? "
        "GROUP BY name ORDER BY max(sort) DESC LIMIT ?"
    )
    return [r[0] for r in db.execute(sql, (like, PENDING, limit))]


def rebuild(runs_dir: Path) -> int:
    """`runs --reindex`: the index made afresh from the folders; how many rows it holds."""
    _remove(runs_dir / FILE)
    with fresh(runs_dir) as db:
        found = db.execute("SELECT count(*) FROM runs WHERE kind != ?", (PENDING,)).fetchone()
        return int(found[0])
