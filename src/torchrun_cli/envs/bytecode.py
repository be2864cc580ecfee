"""Give a new environment the bytecode its first run will need, and no more.

Run by the new environment's own python (`python -I bytecode.py DONOR_ENV...`), so the magic
number and the cache tag are the ones its imports will check; standard library only.
Why: compiling every file of torch takes ~7 s on 2 cores, and compiling none makes the first
`import torch` compile the 731 files it loads itself (2.3x a compiled import; bench/bytecode.py
measures all three designs). So:
- uv hardlinks every installed file from its cache, and a donor environment that holds the
  same file (same inode) may have compiled it already: its .pyc is linked when its header
  matches what the import system itself checks (the magic number, the source's mtime and size);
- then the files that importing the environment's top packages loads (the distributions no
  other one requires, e.g. torch, not sympy) are compiled, in parallel: found by following the
  import statements that run at import time, from each top package's __init__.py;
- whatever else a job imports, Python compiles as it imports it.
"""

from __future__ import annotations

import contextlib
import ctypes
import dis
import functools
import importlib.util
import marshal
import multiprocessing
import os
import queue
import re
import struct
import sys
import sysconfig
import types
import warnings
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

# .pyc flags the import system validates against the source: 0 = mtime and size, 3 = a hash
# checked on import (what py_compile writes when SOURCE_DATE_EPOCH is set). 1 (never checked)
# is never linked.
_CHECKED = (0, 3)


def _header_ok(pyc: str, st: os.stat_result) -> bool:
    """A .pyc the import system will check against this source, and for timestamp ones, made
    from exactly its mtime and size."""
    try:
        with open(pyc, "rb") as fh:
            head = fh.read(16)
    except OSError:
        return False
    if len(head) < 16 or head[:4] != importlib.util.MAGIC_NUMBER:
        return False
    flags, mtime, size = struct.unpack("<III", head[4:16])
    if flags not in _CHECKED:
        return False
    return bool(
        flags == 3 or (mtime == int(st.st_mtime) & 0xFFFFFFFF and size == st.st_size & 0xFFFFFFFF)
    )


def _link(src: str, st: os.stat_result, rel: str, donors: list[Path]) -> bool:
    """Link a donor's .pyc for src when the donor holds the very same source file (same inode:
    two files of the same size and mtime can differ, the same inode cannot)."""
    pyc = importlib.util.cache_from_source(src)
    for donor in donors:
        other = str(donor / rel)
        try:
            ost = os.stat(other)
        except OSError:
            continue
        if (ost.st_dev, ost.st_ino) != (st.st_dev, st.st_ino):
            continue
        donor_pyc = importlib.util.cache_from_source(other)
        if not _header_ok(donor_pyc, st):
            continue
        try:
            os.makedirs(os.path.dirname(pyc), exist_ok=True)
            os.link(donor_pyc, pyc)
        except FileExistsError:  # a stale .pyc shipped in the wheel: the import compiles over it
            return False
        except OSError:  # this donor was pruned meanwhile: try the next
            continue
        return True
    return False


def _sources(site: str) -> list[tuple[str, os.stat_result]]:
    out = []
    for dirpath, dirnames, filenames in os.walk(site):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        for name in filenames:
            if name.endswith(".py"):
                src = os.path.join(dirpath, name)
                try:
                    out.append((src, os.stat(src)))
                except OSError:  # a dangling symlink: nothing to link
                    continue
    return out


_NAME = re.compile(r"[A-Za-z0-9._-]+")
_NOT_ROOTS = {"pip", "setuptools", "wheel", "_distutils_hack", "pkg_resources"}
# One import statement: (module, level, names); `from .. import a, b` is ("", 2, ["a", "b"]).
if TYPE_CHECKING:  # never evaluated: this runs on the environment's python, 3.8 too
    Imported = tuple[str, int, list[str]]


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _top_modules(site: str) -> list[str]:
    """The import names of the distributions no other installed distribution requires: what a
    user asked for (torch), not what came with it (sympy, which torch imports when it needs)."""
    names: dict[str, list[str]] = {}
    required: set[str] = set()
    for info in Path(site).glob("*.dist-info"):
        try:
            headers = (info / "METADATA").read_text(errors="replace").split("\n\n", 1)[0]
            record = (info / "RECORD").read_text(errors="replace")
        except OSError:
            continue
        name = ""
        for line in headers.splitlines():
            if line.startswith("Name:"):
                name = _normal(line[5:].strip())
            elif (
                line.startswith("Requires-Dist:")
                and "extra ==" not in line
                and (m := _NAME.match(line[14:].strip()))
            ):
                required.add(_normal(m.group()))
        tops = {row.split("/", 1)[0].split(",", 1)[0] for row in record.splitlines()}
        found = sorted(
            stem
            for stem in map(_stem, tops)
            if stem.isidentifier() and stem not in _NOT_ROOTS and _module_file(site, (stem,))
        )
        # the module named as the distribution (torch, not also torchgen and functorch)
        names[name] = [top for top in found if _normal(top) == name] or found
    return sorted({top for dist, tops in names.items() if dist not in required for top in tops})


def _stem(name: str) -> str:
    return name[:-3] if name.endswith(".py") else name


def _worker_init(parent: int) -> None:
    """Workers die with this process even after kill -9 (PR_SET_PDEATHSIG, as the trampoline
    in tools.py does for the job), and stay quiet about SyntaxWarnings, as pip and uv do."""
    warnings.filterwarnings("ignore")
    with contextlib.suppress(OSError, AttributeError):  # not Linux: the pool's shutdown has to do
        ctypes.CDLL(None, use_errno=True).prctl(1, 9, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)


def _compile(src: str) -> list[Imported] | str | None:
    """Compile src (a valid .pyc, linked or shipped, is read instead) and return the imports
    that run when it is imported; None when it is not valid Python, the OSError's text when it
    cannot be written."""
    try:
        st = os.stat(src)
        pyc = importlib.util.cache_from_source(src)
        if _header_ok(pyc, st):
            with open(pyc, "rb") as fh:  # what the job's imports would run anyway
                return _imports(marshal.loads(fh.read()[16:]))  # noqa: S302
        with open(src, "rb") as fh:
            code = compile(fh.read(), src, "exec", dont_inherit=True)
        # PEP 552's timestamp form, as the import system writes it: magic, flags 0, the
        # source's mtime and size, the marshalled code
        data = importlib.util.MAGIC_NUMBER + struct.pack(
            "<III", 0, int(st.st_mtime) & 0xFFFFFFFF, st.st_size & 0xFFFFFFFF
        )
        data += marshal.dumps(code)
        os.makedirs(os.path.dirname(pyc), exist_ok=True)
        part = f"{pyc}.{os.getpid()}"
        try:
            with open(part, "wb") as out:
                out.write(data)
            os.replace(part, pyc)  # atomic, as the import system writes its own
        finally:
            with contextlib.suppress(OSError):
                os.unlink(part)  # left only when the write or the rename failed
    except OSError as exc:
        return f"{src}: {exc.strerror or exc}"
    except Exception:  # SyntaxError (Python 2 test data), RecursionError, ...: as py_compile,
        return None  # skipped, as pip and uv do
    return _imports(code)


_IMPORT_NAME = bytes([dis.opmap["IMPORT_NAME"]])
_LOAD_CONST = dis.opmap["LOAD_CONST"]
_LOAD_SMALL_INT = dis.opmap.get("LOAD_SMALL_INT", -1)  # Python 3.14's for the import's level
_EXTENDED_ARG = dis.opmap["EXTENDED_ARG"]
_OPTIMIZED = 0x1  # CO_OPTIMIZED: a function's code (runs when called), not a class body's
# between `TYPE_CHECKING` and its jump: 3.13's TO_BOOL, and what no instruction is of its own
_BETWEEN = {"TO_BOOL", "CACHE", "EXTENDED_ARG", "NOT_TAKEN"}


def _imports(code: types.CodeType) -> list[Imported]:
    """The import statements that run when the code runs: the module's own and its class
    bodies', not its functions' (found in the bytecode, which compile() made anyway: parsing
    to an AST as well would double the time). An import is `LOAD_CONST level, LOAD_CONST
    fromlist, IMPORT_NAME module`; the rare one this misses is compiled by the job itself."""
    found = _imports_typed(code) if "TYPE_CHECKING" in code.co_names else _imports_fast(code)
    for const in code.co_consts:
        if isinstance(const, types.CodeType) and not const.co_flags & _OPTIMIZED:
            found += _imports(const)
    return found


def _imports_typed(code: types.CodeType) -> list[Imported]:
    """As _imports_fast, leaving out what `if TYPE_CHECKING:` guards (torch's type-only
    imports would triple what is compiled); dis gives the jump's target."""
    found: list[Imported] = []
    consts: list[object] = [None, None]
    skip_to, typed = -1, False
    for ins in dis.get_instructions(code):
        if typed and "IF_FALSE" in ins.opname:
            skip_to = int(ins.argval)
        if ins.opname not in _BETWEEN:
            typed = ins.argval == "TYPE_CHECKING"
        if ins.opcode in (_LOAD_CONST, _LOAD_SMALL_INT):
            consts = [consts[1], ins.argval]
        elif ins.opname == "IMPORT_NAME" and ins.offset >= skip_to:
            found.append(_imported(str(ins.argval), *consts))
    return found


def _imports_fast(code: types.CodeType) -> list[Imported]:
    """The import statements of one code object, by a scan of its bytecode for IMPORT_NAME."""
    found: list[Imported] = []
    raw = code.co_code
    i = raw.find(_IMPORT_NAME)
    while i != -1:
        if i % 2 == 0:
            plain = (
                i >= 4
                and raw[i - 2] == _LOAD_CONST
                and raw[i - 4] in (_LOAD_CONST, _LOAD_SMALL_INT)
                and (i < 6 or raw[i - 6] != _EXTENDED_ARG)
            )
            if not plain:  # an EXTENDED_ARG, or another form: dis reads it right
                return _imports_typed(code)
            level = code.co_consts[raw[i - 3]] if raw[i - 4] == _LOAD_CONST else raw[i - 3]
            found.append(_imported(code.co_names[raw[i + 1]], level, code.co_consts[raw[i - 1]]))
        i = raw.find(_IMPORT_NAME, i + 1)
    return found


def _imported(module: str, level: object, names: object) -> Imported:
    """One import statement from the constants before its IMPORT_NAME: the level (an int)
    and the fromlist (a tuple of names, or None)."""
    return (
        module,
        level if isinstance(level, int) else 0,
        list(names) if isinstance(names, tuple) else [],
    )


def _files(site: str, src: str, imported: Imported) -> list[str]:
    """The files in site that one import statement of src loads: each package on the way and
    the module (for `from P import m`, m too when it is a submodule)."""
    module, level, names = imported
    if level:
        package = os.path.relpath(os.path.dirname(src), site).split(os.sep)
        if level > 1:
            package = package[: len(package) - (level - 1)]
        parts = [*package, *module.split(".")] if module else package
    else:
        parts = module.split(".")
    out = []
    for i in range(1, len(parts) + 1):
        out += _module_file(site, tuple(parts[:i]))
    for name in names:
        if name != "*":
            out += _module_file(site, (*parts, name))
    return out


@functools.lru_cache(maxsize=None)  # noqa: UP033 - functools.cache is 3.9's (see Imported)
def _module_file(site: str, parts: tuple[str, ...]) -> list[str]:
    """The file of a module in site, if it is there (cached: torch's files name the same
    modules some 5,000 times, and each look is two stat calls)."""
    base = os.path.join(site, *parts)
    for candidate in (os.path.join(base, "__init__.py"), base + ".py"):
        if os.path.isfile(candidate):
            return [candidate]
    return []


def _compile_closure(site: str, tops: list[str]) -> tuple[int, list[str]]:
    """Compile the files importing `tops` loads, in parallel, following imports as each file
    is compiled; (files compiled or already valid, errors)."""
    start = [f for top in tops for f in _module_file(site, (top,))]
    seen, done, running = set(start), 0, 0
    errors: list[str] = []
    sources: dict[Future[list[Imported] | str | None], str] = {}
    finished: queue.SimpleQueue[Future[list[Imported] | str | None]] = queue.SimpleQueue()
    workers = min(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1, 8)
    # fork: the workers are this process's children (_worker_init checks), where 3.14's
    # default forkserver would make them the server's
    forked = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(
        workers, forked, initializer=_worker_init, initargs=(os.getpid(),)
    ) as pool:

        def submit(src: str) -> None:
            future = pool.submit(_compile, src)
            future.add_done_callback(finished.put)
            sources[future] = src

        for src in start:
            submit(src)
        running = len(start)
        while running:
            future = finished.get()
            src, result = sources.pop(future), future.result()
            running -= 1
            if isinstance(result, str):
                errors.append(result)
                continue
            done += result is not None
            for imported in result or []:
                for file in _files(site, src, imported):
                    if file not in seen:
                        seen.add(file)
                        submit(file)
                        running += 1
    return done, errors


def main(argv: list[str]) -> int:
    prefix = Path(sys.prefix)
    donors_roots = [Path(a) for a in argv[1:]]
    paths = sysconfig.get_paths()
    sites = {os.path.realpath(paths[k]): paths[k] for k in ("purelib", "platlib")}  # lib64->lib
    linked, compiled = 0, 0
    errors: list[str] = []
    tops: list[str] = []
    for site in sites.values():
        site_rel = os.path.relpath(site, prefix)
        donors = [root / site_rel for root in donors_roots]
        if donors:
            for src, st in _sources(site):
                if _header_ok(importlib.util.cache_from_source(src), st):
                    continue  # shipped in the wheel, and valid
                linked += _link(src, st, os.path.relpath(src, site), donors)
        here = _top_modules(site)
        tops += here
        done, failed = _compile_closure(site, here)
        compiled, errors = compiled + done, errors + failed
    print(
        f"Bytecode: linked {linked} files from {len(donors_roots)} earlier environment(s), "
        f"compiled {compiled} that importing {', '.join(tops) or 'nothing'} loads"
    )
    for error in errors[:20]:
        print(f"cannot write bytecode: {error}")
    return 1 if errors else 0  # a full or read-only disk is the build's failure, not a detail


if __name__ == "__main__":
    sys.exit(main(sys.argv))
