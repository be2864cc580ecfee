"""mypy --strict, ruff and ruff format are part of the test command; and the shape DESIGN.md
section 3 gives the code: imports point down the layers, small modules, package imports at the
top of a file unless a comment says what deferring them saves."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "torchrun_cli"

# Each module may import modules of a lower rank, and modules of its own package.
RANKS = {
    "torchrun_cli": 0,
    "torchrun_cli.errors": 0,
    "torchrun_cli.masking": 0,
    "torchrun_cli.durations": 0,
    "torchrun_cli.store": 0,  # imports nothing of torchjob; settings reads config files with it
    "torchrun_cli.settings": 1,
    "torchrun_cli.tools": 1,
    "torchrun_cli.steps": 1,  # the protocol stages report setup steps through
    "torchrun_cli.spec": 2,
    "torchrun_cli.record": 3,
    "torchrun_cli.pipeline_record": 3.5,  # pipeline.json (over run.json): listed with the runs
    "torchrun_cli.source": 4,
    "torchrun_cli.envs": 4,
    "torchrun_cli.launch": 5,
    "torchrun_cli.jobs": 6,
    "torchrun_cli.console": 6,
    "torchrun_cli.pipelines": 7,  # each step is a run: pipelines call jobs.run
    "torchrun_cli.commands": 8,  # the CLI's commands besides run: typer apps cli.py merges
    "torchrun_cli.cli": 9,
    "torchrun_cli.__main__": 10,
}
CLI = ("torchrun_cli.cli", "torchrun_cli.commands")  # where typer is, and what they may import:
CLI_MAY_IMPORT = {
    "torchrun_cli",
    "torchrun_cli.commands",
    "torchrun_cli.console",
    "torchrun_cli.jobs",
    "torchrun_cli.pipelines",
    "torchrun_cli.spec",
    "torchrun_cli.errors",
    "torchrun_cli.settings",
}
MAX_LINES = 400


def _module(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _group(module: str) -> str:
    """The layer entry a module belongs to: its package (source, envs, ...) or itself."""
    return max((g for g in RANKS if module == g or module.startswith(g + ".")), key=len)


def _imports(tree: ast.AST, module: str) -> list[tuple[ast.stmt, str]]:
    """(statement, module imported) for every import of torchrun_cli, at any depth."""
    found: list[tuple[ast.stmt, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:  # `from torchrun_cli import console` names a module
                candidate = f"{node.module}.{alias.name}"
                in_package = (SRC.parent / candidate.replace(".", "/")).with_suffix(".py")
                is_module = in_package.exists() or in_package.with_suffix("").is_dir()
                found.append((node, candidate if is_module else node.module))
    return [(n, m) for n, m in found if m.split(".")[0] == "torchrun_cli"]


def _sources() -> list[tuple[Path, str, ast.Module]]:
    return [(p, _module(p), ast.parse(p.read_text())) for p in sorted(SRC.rglob("*.py"))]


def test_imports_point_down_the_layers() -> None:
    wrong = []
    for path, module, tree in _sources():
        own = _group(module)
        for node, target in _imports(tree, module):
            theirs = _group(target)
            if theirs != own and RANKS[theirs] >= RANKS[own]:
                wrong.append(f"{path.relative_to(ROOT)}:{node.lineno}: {module} -> {target}")
            if own in CLI and theirs not in CLI_MAY_IMPORT:
                wrong.append(f"{path.relative_to(ROOT)}:{node.lineno}: cli -> {target}")
    assert not wrong, "\n".join(wrong)


def test_typer_only_in_cli_rich_only_in_console_torch_nowhere() -> None:
    for path, module, tree in _sources():
        names = {
            a.name.split(".")[0]
            for n in ast.walk(tree)
            if isinstance(n, ast.Import)
            for a in n.names
        }
        names |= {
            n.module.split(".")[0]
            for n in ast.walk(tree)
            if isinstance(n, ast.ImportFrom) and n.module
        }
        assert "torch" not in names, path
        assert "typer" not in names or _group(module) in CLI, path
        assert "rich" not in names or module == "torchrun_cli.console", path
        assert "shell=True" not in path.read_text(), path


def test_no_module_holds_two_nouns() -> None:
    long = [
        f"{p.relative_to(ROOT)}: {n} lines"
        for p in SRC.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    ]
    assert not long, long


def test_imports_inside_functions_say_why() -> None:
    """A package import inside a function is a measured start-up saving (or an optional
    dependency): the comment on it, or on the line above, says so."""
    silent = []
    for path, _, tree in _sources():
        lines = path.read_text().splitlines()
        guarded = {
            id(n)
            for node in ast.walk(tree)
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for n in ast.walk(node)
        }
        for func in ast.walk(tree):
            if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(func):
                if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in guarded:
                    said = " ".join(lines[node.lineno - 2 : node.end_lineno or node.lineno])
                    if "#" not in said:
                        silent.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not silent, silent


def test_no_test_module_imports_another() -> None:
    for path in (ROOT / "tests").glob("test_*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith(("tests.test_", "tests.conftest")), path


def _tool(*args: str) -> None:
    res = subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert res.returncode == 0, res.stdout + res.stderr


def test_mypy_strict_is_clean() -> None:
    _tool("mypy")


def test_ruff_is_clean() -> None:
    _tool("ruff", "check", ".")


def test_ruff_format_is_clean() -> None:
    _tool("ruff", "format", "--check", ".")
