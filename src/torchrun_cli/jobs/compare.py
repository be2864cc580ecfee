"""`torchjob compare` and `torchjob diff`: runs side by side, as data the console renders (a
table, JSON, CSV or Markdown for a pull request or a CI summary).

compare: a row per run, a column per param and per output (each metric's last value); the
params whose values differ between the runs are marked. diff: two runs, a row per fact (params,
env, source commit, environment key and packages, outputs, status, duration), the differing
ones marked.
"""

from __future__ import annotations

import csv
import io
import json
import shlex
from collections.abc import Sequence
from typing import Any, NamedTuple

from torchrun_cli.jobs.views import cell, took
from torchrun_cli.record import RunRecord


class Comparison(NamedTuple):
    """Columns, rows, and which columns (compare) or rows (diff: `by_row`) hold values that
    differ."""

    heads: tuple[str, ...]
    rows: Sequence[tuple[str, ...]]
    differ: frozenset[int]
    by_row: bool = False

    def marked(self, row: int, column: int) -> bool:
        """Whether a cell (row -1: the heads) is one of the differing ones."""
        return (row in self.differ) if self.by_row else (column in self.differ)

    def markdown(self) -> str:
        """A GitHub table; the differing columns' (diff: rows') cells in bold."""
        esc = [[c.replace("|", "\\|") for c in row] for row in (self.heads, *self.rows)]
        bold = [
            [f"**{c}**" if c and self.marked(r - 1, i) else c for i, c in enumerate(cells)]
            for r, cells in enumerate(esc)
        ]
        lines = ["| " + " | ".join(bold[0]) + " |", "|" + "---|" * len(self.heads)]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in bold[1:]]) + "\n"

    def csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerows([self.heads, *self.rows])
        return out.getvalue()


def compare(records: Sequence[RunRecord]) -> Comparison:
    params = _keys(r.params for r in records)
    outputs = _keys(r.outputs for r in records)
    heads = ("RUN", "NAME", "STATUS", *params, *outputs)
    rows = [
        (
            r.id,
            r.name,
            r.shown_status().value,
            *(cell(r.params.get(k)) for k in params),
            *(cell(r.outputs.get(k)) for k in outputs),
        )
        for r in records
    ]
    first = 3  # the params' columns start here
    differ = frozenset(
        first + i
        for i, _ in enumerate(params)
        if len({row[first + i] for row in rows}) > 1 and len(rows) > 1
    )
    return Comparison(heads, rows, differ)


def as_data(records: Sequence[RunRecord]) -> list[dict[str, Any]]:
    """compare --json: each run's id, name, status, params and outputs."""
    return [
        {
            "id": r.id,
            "name": r.name,
            "status": r.shown_status().value,
            "params": r.params,
            "outputs": r.outputs,
        }
        for r in records
    ]


def _keys(mappings: Any) -> list[str]:  # an iterable of mappings
    return list(dict.fromkeys(k for m in mappings for k in m))


def diff(a: RunRecord, b: RunRecord) -> Comparison:
    """Two runs, a row per fact; the rows whose values differ are marked (column 0)."""
    facts: list[tuple[str, Any, Any]] = [
        ("status", a.shown_status().value, b.shown_status().value),
        ("exit", a.exit_code, b.exit_code),
        ("duration", took(a.duration_s), took(b.duration_s)),
        ("script", a.spec.get("script"), b.spec.get("script")),
        ("command", shlex.join(a.argv), shlex.join(b.argv)),
        ("source", _source(a), _source(b)),
        ("commit", a.source.get("commit"), b.source.get("commit")),
        ("environment", a.environment.get("key"), b.environment.get("key")),
        ("python", a.environment.get("python_version"), b.environment.get("python_version")),
        ("packages", _packages(a), _packages(b)),
    ]
    for label, left, right in (("param", a.params, b.params), ("output", a.outputs, b.outputs)):
        facts += [(f"{label} {k}", left.get(k), right.get(k)) for k in _keys((left, right))]
    env_a, env_b = a.spec.get("env") or {}, b.spec.get("env") or {}
    facts += [(f"env {k}", env_a.get(k), env_b.get(k)) for k in _keys([env_a, env_b])]
    rows = [(label, _text(x), _text(y)) for label, x, y in facts]
    differ = frozenset(i for i, (_, x, y) in enumerate(rows) if x != y)
    return Comparison(("", a.id, b.id), rows, differ, by_row=True)


def _source(rec: RunRecord) -> str:
    src = rec.source
    where = str(src.get("url") or src.get("path") or "")
    return f"{src.get('kind') or 'local'} {where}" + (f" @ {src['ref']}" if src.get("ref") else "")


def _packages(rec: RunRecord) -> str:
    python = rec.spec.get("python") or {}
    found = [
        *python.get("packages", []),
        *([python["requirements"]] * bool(python.get("requirements"))),
    ]
    return ", ".join(found)


def _text(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return "" if value is None else cell(value)
