"""`torchjob compare`, `diff` and `plot`: runs side by side, and their metrics as curves.
The data comes from jobs/ (compare.py, history.py); console/ prints it."""

from pathlib import Path
from typing import Annotated, Any

import typer

from torchrun_cli import console, settings
from torchrun_cli.commands import AsJson, RunRef, RunsDir
from torchrun_cli.commands.usage import epilog
from torchrun_cli.errors import UsageError

app = typer.Typer()

Refs = Annotated[
    list[str],
    typer.Argument(
        metavar="RUN...",
        help="Runs (ids, names, last~N); one run name: its runs; a pipeline: its steps' runs.",
        show_default=False,
    ),
]


@app.command(epilog=epilog("compare"))
def compare(
    refs: Refs,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Runs of a name: at most.")] = 20,
    as_json: AsJson = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="CSV, a row per run.")] = False,
    as_md: Annotated[
        bool, typer.Option("--md", help="A Markdown table (a PR, a CI summary).")
    ] = False,
    runs_dir: RunsDir = None,
) -> None:
    """Runs side by side: params and outputs (each metric's last value); the params that
    differ are marked (* after the column's name)."""
    from torchrun_cli.jobs import compare as comparing  # measured: compare alone needs it
    from torchrun_cli.jobs import history  # as in commands._runs

    found = [rec for rec, _ in history.selection(settings.read(), runs_dir, refs, limit)]
    if as_json:
        console.data(comparing.as_data(found))
        return
    table = comparing.compare(found)
    if as_csv or as_md:
        console.raw((table.csv() if as_csv else table.markdown()).encode())
        console.raw(b"")
        return
    heads = tuple(h + "*" * (i in table.differ) for i, h in enumerate(table.heads))
    console.table(heads, table.rows, status=2)


@app.command(epilog=epilog("diff"))
def diff(
    first: RunRef,
    second: Annotated[str, typer.Argument(metavar="RUN", help="The run to compare it with.")],
    as_md: Annotated[bool, typer.Option("--md", help="A Markdown table.")] = False,
    runs_dir: RunsDir = None,
) -> None:
    """Two runs side by side: status, exit, duration, source and commit, environment key and
    packages, params, outputs and env; the rows that differ are marked (*)."""
    from torchrun_cli.jobs import compare as comparing  # as in compare
    from torchrun_cli.jobs import history  # as in commands._runs

    chosen = history.selection(settings.read(), runs_dir, [first, second], 2)
    if len(chosen) != 2:
        raise UsageError(
            f"diff compares two runs, and {first} and {second} name {len(chosen)}",
            "name a pipeline's or sweep's run as ID/STEP; `torchjob compare ID` shows them all",
        )
    (a, _), (b, _) = chosen
    table = comparing.diff(a, b)
    if as_md:
        console.raw(table.markdown().encode())
        console.raw(b"")
        return
    rows = [
        (("* " if i in table.differ else "  ") + r[0], *r[1:]) for i, r in enumerate(table.rows)
    ]
    console.table(table.heads, rows)


@app.command(epilog=epilog("plot"))
def plot(
    run_ref: RunRef = "last",
    names: Annotated[
        list[str] | None,
        typer.Argument(metavar="[METRIC...]", help="Metrics to plot [default: all of the run's]."),
    ] = None,
    versus: Annotated[
        list[str] | None,
        typer.Option("--vs", metavar="RUN", help="Another run's curves in the same plots."),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Draw into a .png or .svg file (needs matplotlib)."),
    ] = None,
    width: Annotated[int | None, typer.Option("--width", min=20, help="Columns.")] = None,
    height: Annotated[int | None, typer.Option("--height", min=5, help="Lines per plot.")] = None,
    runs_dir: RunsDir = None,
) -> None:
    """A run's metrics as curves by step, in the terminal (or a file with --output); a running
    run's so far."""
    from torchrun_cli.console import plot as plotting  # measured: plotext loads with it
    from torchrun_cli.jobs import history  # as in commands._runs

    chosen = history.selection(settings.read(), runs_dir, [run_ref, *(versus or [])], 1)
    curves: dict[str, dict[str, Any]] = {}
    for (rec, _), series in zip(chosen, history.series_of(chosen), strict=True):
        for metric, points in series.items():
            curves.setdefault(metric, {})[f"{rec.name} {rec.id[-4:]}"] = points
    wanted = names or list(curves)
    if missing := [m for m in wanted if m not in curves]:
        raise UsageError(
            f"no metric {', '.join(missing)} in these runs"
            + (f" (they have {', '.join(curves)})" if curves else " (they reported no metrics)"),
            "write JSON lines to $TORCHJOB_METRICS, or set metrics.from_output in the spec",
        )
    drawn = {m: curves[m] for m in wanted}
    if output is not None:
        plotting.to_file(drawn, output)
        console.note(f"wrote {output}")
    else:
        plotting.show(drawn, width, height)
