"""What goes into an environment, and its key: sha256 over canonical JSON of every input.

The key covers the manager and its version, the base interpreter's identity, the python version,
the content of the requirements file and of every file it includes (-r, -c), the packages, the
conda file's content, system_site_packages, and the installer's own configuration that changes
what gets installed (pip's or uv's index and constraint variables, their config files and the
constraint files those name). Interpreter facts are cached by the binary's stat, so a cache hit
never starts an interpreter.
"""

from __future__ import annotations

import configparser
import hashlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torchrun_cli import store
from torchrun_cli.errors import SetupError
from torchrun_cli.masking import mask_text

SCHEMA = 2  # 2: the installer's configuration is part of the key
MAX_REQUIREMENTS_BYTES = 4 << 20
# Variables that change what pip or uv resolves and installs (not timeouts, certificates or
# caches). URLs are keyed with their credentials masked: a password does not change a wheel.
PIP_VARIABLES = (
    "PIP_INDEX_URL",
    "PIP_EXTRA_INDEX_URL",
    "PIP_FIND_LINKS",
    "PIP_NO_INDEX",
    "PIP_CONSTRAINT",
    "PIP_PRE",
    "PIP_ONLY_BINARY",
    "PIP_NO_BINARY",
    "PIP_PREFER_BINARY",
    "PIP_UPGRADE_STRATEGY",
    "PIP_CONFIG_FILE",
)
UV_VARIABLES = (
    "UV_INDEX_URL",
    "UV_EXTRA_INDEX_URL",
    "UV_INDEX",
    "UV_DEFAULT_INDEX",
    "UV_FIND_LINKS",
    "UV_NO_INDEX",
    "UV_CONSTRAINT",
    "UV_OVERRIDE",
    "UV_BUILD_CONSTRAINT",
    "UV_PRERELEASE",
    "UV_RESOLUTION",
    "UV_EXCLUDE_NEWER",
    "UV_INDEX_STRATEGY",
    "UV_NO_BINARY",
    "UV_NO_BUILD",
    "UV_TORCH_BACKEND",
    "UV_CONFIG_FILE",
    "UV_NO_CONFIG",
)
_INCLUDE = re.compile(r"^\s*(?:--requirement|--constraint|-r|-c)(?:\s*=\s*|\s*)([^\s#]+)")
_FACTS = (
    "import json, os, platform, sys; print(json.dumps({'version': "
    "platform.python_version(), 'implementation': platform.python_implementation(), "
    "'platform': sys.platform, 'machine': platform.machine(), "
    "'executable': os.path.realpath(sys.executable)}))"
)


def canonical_hash(data: Any) -> str:
    """sha256 of canonical JSON: sorted keys, fixed separators, no joined strings."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


def file_digest(path: Path) -> str:
    """sha256 of a small regular file's content (a FIFO or /dev/zero is refused)."""
    return hashlib.sha256(read_input(path)).hexdigest()


def read_input(path: Path) -> bytes:
    """A file that goes into an environment, read with a bound: a bad one is a SetupError
    (jobs.plan turns it into exit 2 when the project is local and known before the run)."""
    try:
        return store.read_small(path, MAX_REQUIREMENTS_BYTES)
    except (OSError, store.NotReadable) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise SetupError(
            f"cannot read {path}: it {reason}"
            if isinstance(exc, store.NotReadable)
            else f"cannot read {path}: {reason}",
            "check python.requirements and its -r/-c includes",
            phase="environment",
        ) from None


def requirement_files(path: Path) -> list[list[str]]:
    """[name, sha256] of the requirements file and every file it includes, in order."""
    out: list[list[str]] = []
    seen: set[Path] = set()
    top = path.resolve().parent  # names relative to it: checkouts in other folders match

    def visit(p: Path) -> None:
        p = p.resolve()
        if p in seen:
            return
        seen.add(p)
        try:
            text = read_input(p).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SetupError(
                f"cannot read requirements file {p}: {exc}",
                "check python.requirements and its -r/-c includes",
                phase="environment",
            ) from None
        out.append([os.path.relpath(p, top), hashlib.sha256(text.encode()).hexdigest()])
        for line in text.replace("\\\n", "").splitlines():  # pip joins continued lines
            if m := _INCLUDE.match(line):
                if "://" in m.group(1):  # a remote include is keyed by its URL: no network
                    out.append([m.group(1), "url"])
                else:
                    visit(p.parent / m.group(1))

    visit(path)
    return out


def interpreter_facts(path: str, cache_home: Path) -> dict[str, str]:
    """Real path, version, implementation and platform; started once per binary, then cached.

    A launcher script (a pyenv shim, say) picks its python from the folder or the environment,
    so its facts are never cached, and the key names the python it ran (`executable`)."""
    try:
        real = os.path.realpath(path)
        st = os.stat(real)
        with open(real, "rb") as fh:
            script = fh.read(2) == b"#!"
    except OSError as exc:
        raise SetupError(
            f"cannot use the interpreter {path}: {exc.strerror}",
            "pass a working interpreter with --python",
            phase="environment",
        ) from None
    signature = f"{real}:{st.st_size}:{int(st.st_mtime)}:{st.st_ino}"
    cache = cache_home / "interpreters.json"
    try:
        known = json.loads(cache.read_text())
    except (OSError, ValueError):
        known = {}
    if not script and isinstance(known, dict) and signature in known:
        facts: dict[str, str] = known[signature]
        return facts
    try:
        out = subprocess.run(
            [path, "-I", "-c", _FACTS], capture_output=True, text=True, timeout=60, check=True
        ).stdout
        facts = {"realpath": real, **json.loads(out)}
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        raise SetupError(
            f"cannot start the interpreter {path}: {exc}",
            "pass a working interpreter with --python",
            phase="environment",
        ) from None
    if facts.get("executable") == real:
        del facts["executable"]  # the same binary: keys of plain interpreters stay as they were
    if script:
        return facts
    known = known if isinstance(known, dict) else {}
    known[signature] = facts
    cache.parent.mkdir(parents=True, exist_ok=True)
    store.write_atomic(cache, json.dumps(known).encode())
    return facts


def tool_identity(executable: str) -> str:
    """A cheap identity for a manager binary that has no cheap version query: path and stat."""
    real = os.path.realpath(shutil.which(executable) or executable)
    st = os.stat(real)
    return f"{real}:{st.st_size}:{int(st.st_mtime)}"


def installer_config(manager: str, project: Path, environ: Mapping[str, str]) -> dict[str, Any]:
    """What pip's (virtualenv, conda) or uv's own configuration says that changes what an
    install resolves to: its variables, the content of its config files, and the content of
    the constraint files those name. Secrets in index URLs never reach the key's text."""
    uv = manager == "uv"
    names = UV_VARIABLES if uv else PIP_VARIABLES
    variables = {n: _masked_words(environ[n]) for n in names if environ.get(n)}
    files = _uv_configs(project, environ) if uv else _pip_configs(environ)
    constraints = (
        [
            w
            for n in ("UV_CONSTRAINT", "UV_OVERRIDE", "UV_BUILD_CONSTRAINT")
            for w in environ.get(n, "").split()
        ]
        if uv
        else environ.get("PIP_CONSTRAINT", "").split()
    )
    configs = {}
    for path in files:
        if path.is_file():
            text = read_input(path)
            if path.name == "pyproject.toml":
                text = _uv_tables(text)  # its other tables do not change what uv installs
            if text:
                configs[str(path)] = hashlib.sha256(text).hexdigest()
            if not uv:
                constraints += _pip_conf_constraints(text)
    keyed = {}
    for name in constraints:
        path = Path(name.removeprefix("file://"))
        keyed[mask_text(name)] = file_digest(path) if path.is_file() else "missing or remote"
    return {"variables": variables, "config_files": configs, "constraints": keyed}


def _masked_words(value: str) -> str:
    return " ".join(mask_text(word) for word in value.split())


def _config_dirs(environ: Mapping[str, str], tool: str) -> tuple[list[Path], Path]:
    """The system folders (XDG_CONFIG_DIRS) and the user folder (XDG_CONFIG_HOME) of a tool."""
    system = [
        Path(d) / tool for d in (environ.get("XDG_CONFIG_DIRS") or "/etc/xdg").split(":") if d
    ]
    home = environ.get("XDG_CONFIG_HOME") or os.path.join(environ.get("HOME", "~"), ".config")
    return system, Path(os.path.expanduser(home)) / tool


def _pip_configs(environ: Mapping[str, str]) -> list[Path]:
    """pip's config files, as pip finds them (PIP_CONFIG_FILE=os.devnull: none at all)."""
    given = environ.get("PIP_CONFIG_FILE")
    if given == os.devnull:
        return []
    system, user = _config_dirs(environ, "pip")
    legacy = Path(os.path.expanduser(os.path.join(environ.get("HOME", "~"), ".pip", "pip.conf")))
    found = [*(d / "pip.conf" for d in system), Path("/etc/pip.conf"), legacy, user / "pip.conf"]
    return found + ([Path(given)] if given else [])


def _pip_conf_constraints(text: bytes) -> list[str]:
    """The constraint files a pip.conf names (`constraint = FILE ...` in any section)."""
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    try:
        parser.read_string(text.decode("utf-8", errors="replace"))
    except configparser.Error:
        return []
    return [
        w
        for section in parser.sections()
        for option in ("constraint", "constraints")
        for w in parser.get(section, option, fallback="").split()
    ]


def _uv_configs(project: Path, environ: Mapping[str, str]) -> list[Path]:
    """uv's config files: UV_CONFIG_FILE, else the user's and the system's uv.toml, and the
    project's own uv.toml or pyproject.toml (which `uv pip` reads from its folder)."""
    if environ.get("UV_NO_CONFIG"):
        return []
    if environ.get("UV_CONFIG_FILE"):
        return [Path(environ["UV_CONFIG_FILE"])]
    system, user = _config_dirs(environ, "uv")
    return [
        *(d / "uv.toml" for d in system),
        Path("/etc/uv/uv.toml"),
        user / "uv.toml",
        project / "uv.toml",
        project / "pyproject.toml",
    ]


def _uv_tables(text: bytes) -> bytes:
    """The `[tool.uv...]` tables of a pyproject.toml, as written."""
    kept: list[bytes] = []
    inside = False
    for line in text.splitlines(keepends=True):
        if line.lstrip().startswith(b"["):
            inside = re.match(rb"\s*\[\[?\s*tool\.uv\s*[.\]]", line) is not None
        if inside:
            kept.append(line)
    return b"".join(kept)
