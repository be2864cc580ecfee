"""What goes into an environment, and its key: sha256 over canonical JSON of every input.

The key covers the manager and its version, the base interpreter's identity, the python version,
the content of the requirements file and of every file it includes (-r, -c), the packages, the
conda file's content and system_site_packages. Interpreter facts are cached by the binary's
stat, so a cache hit never starts an interpreter.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from torchrun_cli import store
from torchrun_cli.errors import SetupError

SCHEMA = 1
_INCLUDE = re.compile(r"^\s*(?:--requirement|--constraint|-r|-c)(?:\s*=\s*|\s*)([^\s#]+)")
_FACTS = ("import json, os, platform, sys; print(json.dumps({'version': "
          "platform.python_version(), 'implementation': platform.python_implementation(), "
          "'platform': sys.platform, 'machine': platform.machine(), "
          "'executable': os.path.realpath(sys.executable)}))")


def canonical_hash(data: Any) -> str:
    """sha256 of canonical JSON: sorted keys, fixed separators, no joined strings."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


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
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise SetupError(f"cannot read requirements file {p}: {exc}",
                             "check python.requirements and its -r/-c includes",
                             phase="environment") from None
        out.append([os.path.relpath(p, top), hashlib.sha256(text.encode()).hexdigest()])
        for line in text.replace("\\\n", "").splitlines():  # pip joins continued lines
            if m := _INCLUDE.match(line):
                if "://" in m.group(1):  # a remote include is keyed by its URL: no network
                    out.append([m.group(1), "url"])
                else:
                    visit(p.parent / m.group(1))

    visit(path)
    return out


def interpreter_facts(path: str) -> dict[str, str]:
    """Real path, version, implementation and platform; started once per binary, then cached.

    A launcher script (a pyenv shim, say) picks its python from the folder or the environment,
    so its facts are never cached, and the key names the python it ran (`executable`)."""
    try:
        real = os.path.realpath(path)
        st = os.stat(real)
        with open(real, "rb") as fh:
            script = fh.read(2) == b"#!"
    except OSError as exc:
        raise SetupError(f"cannot use the interpreter {path}: {exc.strerror}",
                         "pass a working interpreter with --python", phase="environment") from None
    signature = f"{real}:{st.st_size}:{int(st.st_mtime)}:{st.st_ino}"
    cache = store.cache_home() / "interpreters.json"
    try:
        known = json.loads(cache.read_text())
    except (OSError, ValueError):
        known = {}
    if not script and isinstance(known, dict) and signature in known:
        facts: dict[str, str] = known[signature]
        return facts
    try:
        out = subprocess.run([path, "-I", "-c", _FACTS], capture_output=True, text=True,
                             timeout=60, check=True).stdout
        facts = {"realpath": real, **json.loads(out)}
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        raise SetupError(f"cannot start the interpreter {path}: {exc}",
                         "pass a working interpreter with --python", phase="environment") from None
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
