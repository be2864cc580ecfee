"""`torchjob plot`: metric curves drawn in the terminal by plotext (a maintained library for
exactly this), one plot per metric with a line per run; or into a PNG/SVG file by matplotlib
(an optional extra: `pip install 'torchjob[plots]'`). Colour only on a terminal, and never
with NO_COLOR."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from torchrun_cli.errors import UsageError

Curves = Mapping[str, Sequence[tuple[int, float]]]  # a line's label -> (step, value)
MARKERS = "•x+o*#@%"  # a line's marker: told apart without colour too


def text(metric: str, curves: Curves, width: int, height: int, colour: bool) -> str:
    """One metric's plot as text: a line per run, marked by MARKERS in order."""
    import plotext  # measured: 140 ms on first use, paid by `plot` alone

    figure = plotext.figure
    figure.clear()
    figure.plot_size(width, height)
    for (label, points), marker in zip(curves.items(), MARKERS * 8, strict=False):
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        figure.draw(figure.signal(xs, ys, marker=marker).label(f"{label}").lines())
    figure.title(metric)
    built = str(figure.build())
    return built if colour else str(plotext.uncolorize(built))


def show(metrics: Mapping[str, Curves], width: int | None, height: int | None) -> None:
    """Each metric's plot on stdout, sized to the terminal unless told."""
    columns, lines = _terminal()
    colour = sys.stdout.isatty() and "NO_COLOR" not in os.environ
    for metric, curves in metrics.items():
        drawn = text(metric, curves, width or columns, height or max(12, lines // 2), colour)
        sys.stdout.write(drawn.rstrip("\n") + "\n\n")
    sys.stdout.flush()


def to_file(metrics: Mapping[str, Curves], output: Path) -> None:
    """The same plots into one PNG or SVG file, a panel per metric."""
    if output.suffix.lower() not in (".png", ".svg"):
        raise UsageError(f"--output {output}: a .png or .svg file", "name the file plot.png")
    try:
        import matplotlib  # measured: only --output draws a file

        matplotlib.use("Agg")
        from matplotlib import pyplot  # after use(): no display needed
    except ImportError:
        raise UsageError(
            "--output needs matplotlib, which is not installed",
            "pip install 'torchjob[plots]' (or matplotlib), or leave --output out",
        ) from None
    fig, axes = pyplot.subplots(len(metrics), 1, figsize=(8, 3 * len(metrics)), squeeze=False)
    for ax, (metric, curves) in zip(axes[:, 0], metrics.items(), strict=True):
        for label, points in curves.items():
            ax.plot([p[0] for p in points], [p[1] for p in points], label=label)
        ax.set_title(metric)
        ax.set_xlabel("step")
        ax.legend()
    fig.tight_layout()
    try:
        fig.savefig(output)
    except OSError as exc:
        raise UsageError(
            f"--output {output}: {exc.strerror}", "give a folder that exists"
        ) from None
    pyplot.close(fig)


def _terminal() -> tuple[int, int]:
    try:
        size = os.get_terminal_size(sys.stdout.fileno())
        return size.columns, size.lines
    except (OSError, ValueError):
        return 80, 24
