"""The managers that build environments: virtualenv + pip, uv, conda (+ pip). Each runs its tools
through tools.run_tool (argv lists, own process group, output in setup.log)."""

from __future__ import annotations

import importlib.util
import shlex
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from torchrun_cli.envs.key import tool_identity
from torchrun_cli.errors import SetupError
from torchrun_cli.settings import Settings
from torchrun_cli.tools import ToolFailed, run_tool

Progress = Callable[[str], None]
BYTECODE = Path(__file__).with_name("bytecode.py")  # run by the new environment's python


@dataclass(frozen=True)
class BuildRequest:
    """Everything a builder needs; the same values the key was computed from."""

    interpreter: str
    python_version: str | None
    requirements: Path | None
    packages: tuple[str, ...]
    conda_file: Path | None
    system_site_packages: bool
    donors: tuple[Path, ...] = ()  # ready environments whose bytecode a build may reuse
    project: Path | None = None  # the tools run here: `./pkg` lines mean the project's


class Builder(Protocol):
    """One environment manager, made with the command's settings (time limits, executables)."""

    name: str

    def __init__(self, settings: Settings) -> None: ...

    def version(self) -> str:
        """Cheap identity of the tool, part of the key."""

    def build(self, env: Path, req: BuildRequest, log: Path, progress: Progress) -> None:
        """Create the environment at env and install into it."""

    def check(self, env: Path, log: Path) -> None:
        """Fail when installed packages have broken dependencies."""


def python_of(env: Path) -> Path:
    return env / "bin" / "python"


def step(
    name: str,
    argv: list[str],
    log: Path,
    progress: Progress,
    timeout: float,
    cwd: Path | None = None,
) -> str:
    """Run one build step; a failure becomes a SetupError naming the step and the command."""
    progress(name)
    try:
        return run_tool(argv, cwd=cwd, timeout=timeout, log=log, on_line=progress)
    except ToolFailed as exc:
        what = (
            "not found"
            if exc.missing
            else ("timed out" if exc.timed_out else f"failed (exit {exc.returncode})")
        )
        raise SetupError(
            f"{name} {what}: {shlex.join(argv)}\n"
            + (exc.tail(20) if exc.output.strip() else "(no output)"),
            f"read {log}",
            phase="environment",
        ) from None


def _pip_install(
    env: Path, req: BuildRequest, log: Path, progress: Progress, timeout: float
) -> None:
    """pip installs the requirements and packages into env (virtualenv and conda), run in the
    project's folder so that `./pkg` lines mean the project's."""
    if req.requirements or req.packages:
        pip = [str(python_of(env)), "-m", "pip", "install", "--disable-pip-version-check"]
        step("pip install", [*pip, *_pip_args(req)], log, progress, timeout, req.project)


def _pip_args(req: BuildRequest) -> list[str]:
    args = ["-r", str(req.requirements)] if req.requirements else []
    return args + list(req.packages)


class Virtualenv:
    """`virtualenv -p INTERPRETER`, then pip (which compiles bytecode as it installs)."""

    name = "virtualenv"

    def __init__(self, settings: Settings) -> None:
        self.timeout = settings.build_timeout

    def version(self) -> str:
        """From the dist-info folder's name: importlib.metadata costs ~10 ms on every hit."""
        found = importlib.util.find_spec("virtualenv")
        if found is None or not found.origin:
            raise SetupError(
                "virtualenv is not installed", "pip install virtualenv", phase="environment"
            )
        site = Path(found.origin).parent.parent
        for info in site.glob("virtualenv-*.dist-info"):
            return info.name[len("virtualenv-") : -len(".dist-info")]
        from importlib import metadata  # measured: ~10 ms, so only when the folder is odd

        return metadata.version("virtualenv")

    def build(self, env: Path, req: BuildRequest, log: Path, progress: Progress) -> None:
        argv = [sys.executable, "-m", "virtualenv", "--no-periodic-update", "-p", req.interpreter]
        if req.system_site_packages:
            argv.append("--system-site-packages")
        step("create the virtualenv", [*argv, str(env)], log, progress, self.timeout)
        _pip_install(env, req, log, progress, self.timeout)

    def check(self, env: Path, log: Path) -> None:
        step("pip check", [str(python_of(env)), "-m", "pip", "check"], log, _quiet, self.timeout)


class Uv:
    """`uv venv` + `uv pip install`, sharing uv's own cache, then envs/bytecode.py: uv's own
    `--compile-bytecode` would compile torch again (~7 s) for every new environment."""

    name = "uv"

    def __init__(self, settings: Settings) -> None:
        self.timeout = settings.build_timeout

    def exe(self) -> str:
        found = shutil.which("uv")
        if found:
            return found
        try:
            from uv import find_uv_bin  # type: ignore[import-not-found, unused-ignore]  # optional
        except ImportError:  # the optional extra `torchjob[uv]`
            raise SetupError(
                "uv is not installed",
                "pip install 'torchjob[uv]' (or put uv on PATH), or use --env-manager virtualenv",
                phase="environment",
            ) from None
        return str(find_uv_bin())

    def version(self) -> str:
        return tool_identity(self.exe())

    def build(self, env: Path, req: BuildRequest, log: Path, progress: Progress) -> None:
        uv = self.exe()
        argv = [uv, "venv", "--no-project", "--python", req.interpreter]
        if req.system_site_packages:
            argv.append("--system-site-packages")
        step("uv venv", [*argv, str(env)], log, progress, self.timeout)
        if req.requirements or req.packages:
            python = str(python_of(env))
            step(
                "uv pip install",
                [uv, "pip", "install", "--python", python, *_pip_args(req)],
                log,
                progress,
                self.timeout,
                req.project,
            )
            step(
                "compile bytecode",
                [python, "-I", str(BYTECODE), *map(str, req.donors)],
                log,
                progress,
                self.timeout,
            )

    def check(self, env: Path, log: Path) -> None:
        step(
            "uv pip check",
            [self.exe(), "pip", "check", "--python", str(python_of(env))],
            log,
            _quiet,
            self.timeout,
        )


class Conda:
    """`conda create -p ENV python=V`, `conda env update -f FILE`, then pip for requirements."""

    name = "conda"

    def __init__(self, settings: Settings) -> None:
        self.timeout = settings.build_timeout
        self.given = settings.conda

    def exe(self) -> str:
        for candidate in (self.given, "conda", "mamba", "micromamba"):
            if candidate and (found := shutil.which(candidate)):
                return found
        raise SetupError(
            "no conda found (TORCHJOB_CONDA, conda, mamba or micromamba)",
            "install one, set TORCHJOB_CONDA, or use --env-manager uv",
            phase="environment",
        )

    def version(self) -> str:
        return tool_identity(self.exe())

    def build(self, env: Path, req: BuildRequest, log: Path, progress: Progress) -> None:
        conda = self.exe()
        step(
            "conda create",
            [
                conda,
                "create",
                "--yes",
                "--quiet",
                "--prefix",
                str(env),
                f"python={req.python_version}",
            ],
            log,
            progress,
            self.timeout,
        )
        if req.conda_file:
            step(
                "conda env update",
                [conda, "env", "update", "--prefix", str(env), "--file", str(req.conda_file)],
                log,
                progress,
                self.timeout,
            )
        _pip_install(env, req, log, progress, self.timeout)

    def check(self, env: Path, log: Path) -> None:
        step("pip check", [str(python_of(env)), "-m", "pip", "check"], log, _quiet, self.timeout)


def _quiet(line: str) -> None:
    """No progress lines for a check."""


BUILDERS: dict[str, type[Builder]] = {"virtualenv": Virtualenv, "uv": Uv, "conda": Conda}
