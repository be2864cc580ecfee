"""The managers that build environments: virtualenv + pip, uv, conda (+ pip). Each runs its tools
through tools.run_tool (argv lists, own process group, output in setup.log)."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from torchrun_cli.envs.key import tool_identity
from torchrun_cli.errors import SetupError
from torchrun_cli.masking import lift_secrets
from torchrun_cli.settings import Settings
from torchrun_cli.steps import Step, Steps, plural
from torchrun_cli.tools import ToolFailed, run_tool

Follow = Callable[[str, Step], None]  # reads a tool's output line into the step's detail
# pip install flags that take no value: a package after one of them is a package, not its value
_FLAGS = {
    *("-U", "--upgrade", "--pre", "--no-deps", "--no-index", "--force-reinstall", "-q", "-v"),
    *("--quiet", "--verbose", "--no-cache-dir", "--no-build-isolation", "--prefer-binary"),
    *("--user", "--ignore-installed", "-I"),
}
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
    conda_packages: tuple[str, ...] = ()


class Builder(Protocol):
    """One environment manager, made with the command's settings (time limits, executables)."""

    name: str

    def __init__(self, settings: Settings) -> None: ...

    def version(self) -> str:
        """Cheap identity of the tool, part of the key."""

    def build(self, env: Path, req: BuildRequest, log: Path, steps: Steps) -> None:
        """Create the environment at env and install into it."""

    def check(self, env: Path, log: Path, steps: Steps) -> None:
        """Fail when installed packages have broken dependencies."""


def python_of(env: Path) -> Path:
    return env / "bin" / "python"


def step(
    name: str,
    argv: list[str],
    log: Path,
    steps: Steps,
    timeout: float,
    cwd: Path | None = None,
    follow: Follow | None = None,
    secrets: Mapping[str, str] | None = None,
) -> str:
    """Run one build step; a failure becomes a SetupError naming the step and the command.
    secrets: variables the tool gets on top of torchjob's environment (see _pip_args)."""
    env = {**os.environ, **secrets} if secrets else None
    with steps.step(name) as shown:
        on_line = None if follow is None else (lambda line: follow(line, shown))
        try:
            return run_tool(
                argv,
                env=env,
                cwd=cwd,
                timeout=timeout,
                log=log,
                on_line=on_line,
                secrets=list(secrets.values()) if secrets else (),
            )
        except ToolFailed as exc:
            raise _failed(name, log, exc) from None


def _failed(name: str, log: Path, exc: ToolFailed) -> SetupError:
    what = (
        "not found"
        if exc.missing
        else ("timed out" if exc.timed_out else f"failed (exit {exc.returncode})")
    )
    return SetupError(
        f"{name} {what}: {exc.command}\n" + (exc.tail(20) if exc.output.strip() else "(no output)"),
        f"read {log}",
        phase="environment",
    )


class Installs:
    """Reads pip's or uv's output into the step: `installing 12 packages`, counted from what
    the tool says it collects and installs, not its raw last line (no `WARNING: ...` noise)."""

    _PIP_COLLECT = re.compile(r"^Collecting (\S+)")
    _PIP_INSTALL = re.compile(r"^(?:Installing collected packages|Successfully installed):? (.+)")
    _UV = re.compile(r"^(Resolved|Prepared|Installed|Audited) (\d+) packages?")

    def __init__(self) -> None:
        self.collected = 0

    def __call__(self, line: str, shown: Step) -> None:
        if m := self._PIP_COLLECT.match(line):
            self.collected += 1
            shown.detail(f"collecting {m.group(1)} ({self.collected})")
        elif m := self._PIP_INSTALL.match(line):
            count = len([p for p in re.split(r"[,\s]+", m.group(1)) if p])
            shown.rename(f"installing {count} {plural(count, 'package')}")
        elif m := self._UV.match(line):
            count = int(m.group(2))
            if m.group(1) in ("Resolved", "Installed", "Audited"):
                shown.rename(f"installing {count} {plural(count, 'package')}")
            else:
                shown.detail(f"{m.group(1).lower()} {count}")


def _pip_install(env: Path, req: BuildRequest, log: Path, steps: Steps, timeout: float) -> None:
    """pip installs the requirements and packages into env (virtualenv and conda), run in the
    project's folder so that `./pkg` lines mean the project's."""
    if req.requirements or req.packages:
        pip = [str(python_of(env)), "-m", "pip", "install", "--disable-pip-version-check"]
        _install(pip, req, log, steps, timeout)


def _install(tool: list[str], req: BuildRequest, log: Path, steps: Steps, timeout: float) -> None:
    """pip's or uv's install command on the requirements and packages (see _pip_args)."""
    args, secrets = _pip_args(req, log)
    step(
        "installing packages", [*tool, *args], log, steps, timeout, req.project, Installs(), secrets
    )


def _pip_args(req: BuildRequest, log: Path) -> tuple[list[str], dict[str, str]]:
    """pip's (or uv's) arguments for the requirements and packages, and the variables they
    need. A package whose URL holds a password (`pkg @ https://user:PASS@host/...`) goes into
    packages.txt beside setup.log with the password written `${TORCHJOB_PIP_n}`, which both
    tools expand in a requirement's URL: the password is then in no process's argv (DESIGN.md
    section 4) and on no disk, only in the tool's environment.

    Options stay arguments: in a requirements file pip splits an option's line like a shell
    and lets its `--index-url` replace every other index, so moving one would change what it
    means (an index's password goes in PIP_INDEX_URL / UV_INDEX_URL, see the README). So does
    a package after an option that may take it as its value."""
    args = ["-r", str(req.requirements)] if req.requirements else []
    listed = log.with_name("packages.txt")
    lines: list[str] = []
    secrets: dict[str, str] = {}
    for arg in req.packages:
        after = args[-1] if args else ""
        value = after.startswith("-") and "=" not in after and after not in _FLAGS
        kept = arg.startswith("-") or value or "\n" in arg or "\r" in arg
        line = arg if kept else lift_secrets(arg, "TORCHJOB_PIP", secrets)
        if line == arg:
            args.append(arg)  # no password, an option, or maybe an option's value
            continue
        if not lines:
            args += ["-r", str(listed)]  # where the first one stood
        lines.append(line)
    if lines:
        listed.write_text("".join(f"{line}\n" for line in lines))
    return args, secrets


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

    def build(self, env: Path, req: BuildRequest, log: Path, steps: Steps) -> None:
        argv = [sys.executable, "-m", "virtualenv", "--no-periodic-update", "-p", req.interpreter]
        if req.system_site_packages:
            argv.append("--system-site-packages")
        step("creating virtualenv", [*argv, str(env)], log, steps, self.timeout)
        _pip_install(env, req, log, steps, self.timeout)

    def check(self, env: Path, log: Path, steps: Steps) -> None:
        _pip_check(env, log, steps, self.timeout)


class Uv:
    """`uv venv` + `uv pip install`, sharing uv's own cache, then envs/bytecode.py: what earlier
    environments compiled is linked, what importing the top packages loads is compiled. Not
    uv's `--compile-bytecode`: all of torch takes ~7 s on 2 cores (bench/bytecode.py)."""

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

    def build(self, env: Path, req: BuildRequest, log: Path, steps: Steps) -> None:
        uv = self.exe()
        argv = [uv, "venv", "--no-project", "--python", req.interpreter]
        if req.system_site_packages:
            argv.append("--system-site-packages")
        step("creating the environment (uv venv)", [*argv, str(env)], log, steps, self.timeout)
        if req.requirements or req.packages:
            python = str(python_of(env))
            _install([uv, "pip", "install", "--python", python], req, log, steps, self.timeout)
            bytecode = [python, "-I", str(BYTECODE), *map(str, req.donors)]
            step("compiling bytecode", bytecode, log, steps, self.timeout)

    def check(self, env: Path, log: Path, steps: Steps) -> None:
        argv = [self.exe(), "pip", "check", "--python", str(python_of(env))]
        step("checking dependencies", argv, log, steps, self.timeout)


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

    def build(self, env: Path, req: BuildRequest, log: Path, steps: Steps) -> None:
        conda = self.exe()
        create = [conda, "create", "--yes", "--quiet", "--prefix", str(env)]
        version = [f"python={req.python_version}"]
        step("creating the conda environment", [*create, *version], log, steps, self.timeout)
        if req.conda_file:
            update = [conda, "env", "update", "--prefix", str(env), "--file", str(req.conda_file)]
            step("installing the conda file", update, log, steps, self.timeout)
        if req.conda_packages:  # after the file: a package named in both is the one given here
            install = [conda, "install", "--yes", "--quiet", "--prefix", str(env)]
            argv = [*install, *req.conda_packages]
            step("installing the conda packages", argv, log, steps, self.timeout)
        _pip_install(env, req, log, steps, self.timeout)

    def check(self, env: Path, log: Path, steps: Steps) -> None:
        _pip_check(env, log, steps, self.timeout)


def _pip_check(env: Path, log: Path, steps: Steps, timeout: float) -> None:
    argv = [str(python_of(env)), "-m", "pip", "check"]
    step("checking dependencies", argv, log, steps, timeout)


BUILDERS: dict[str, type[Builder]] = {"virtualenv": Virtualenv, "uv": Uv, "conda": Conda}
