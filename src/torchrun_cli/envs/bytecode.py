"""Byte-compile a new environment, reusing what earlier environments compiled.

Run by the new environment's own python (`python -I bytecode.py DONOR_ENV...`), so the magic
number and the cache tag are the ones its imports will check; standard library only.
Why: compiling torch takes ~7 s on 2 cores and uv hardlinks every installed file from its
cache, so a donor environment that holds the same file (same inode) has already compiled it. A
donor's .pyc is linked only when its header matches what the import system itself checks (the
magic number, and the source's mtime and size); every other file is compiled here, in parallel.
Files that do not compile (Python 2 test data in some wheels) are skipped, as pip and uv do.
"""

from __future__ import annotations

import importlib.util
import os
import py_compile
import struct
import sys
import sysconfig
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path


def _header_ok(pyc: str, st: os.stat_result) -> bool:
    """A timestamp-based .pyc for exactly this source (what the import system checks)."""
    try:
        with open(pyc, "rb") as fh:
            head = fh.read(16)
    except OSError:
        return False
    if len(head) < 16 or head[:4] != importlib.util.MAGIC_NUMBER:
        return False
    flags, mtime, size = struct.unpack("<III", head[4:16])
    return bool(flags == 0 and mtime == int(st.st_mtime) & 0xFFFFFFFF
                and size == st.st_size & 0xFFFFFFFF)


def _link(src: str, rel: str, donors: list[Path]) -> bool:
    """Link a donor's .pyc for src when the donor holds the very same source file."""
    st = os.stat(src)
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
        os.makedirs(os.path.dirname(pyc), exist_ok=True)
        try:
            os.link(donor_pyc, pyc)
        except OSError:  # a stale .pyc from the wheel, pruned meanwhile, another filesystem
            return False
        return True
    return False


def _compile(src: str) -> bool:
    try:
        py_compile.compile(src, doraise=True)
    except (py_compile.PyCompileError, OSError, ValueError):
        return False
    return True


def main(argv: list[str]) -> int:
    prefix = Path(sys.prefix)
    donors_roots = [Path(a) for a in argv[1:]]
    sites = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    linked = 0
    todo: list[str] = []
    for site in sites:
        site_rel = os.path.relpath(site, prefix)
        donors = [root / site_rel for root in donors_roots]
        for dirpath, dirnames, filenames in os.walk(site):
            dirnames[:] = [d for d in dirnames if d != "__pycache__"]
            for name in filenames:
                if not name.endswith(".py"):
                    continue
                src = os.path.join(dirpath, name)
                if _header_ok(importlib.util.cache_from_source(src), os.stat(src)):
                    continue  # shipped in the wheel, and valid
                if _link(src, os.path.relpath(src, site), donors):
                    linked += 1
                else:
                    todo.append(src)
    failed = 0
    if todo:
        with ProcessPoolExecutor(max_workers=min(os.cpu_count() or 1, 8)) as pool:
            failed = sum(not ok for ok in pool.map(_compile, todo, chunksize=32))
    print(f"Bytecode: linked {linked} files from {len(donors_roots)} earlier environment(s), "
          f"compiled {len(todo) - failed}, skipped {failed} that do not compile")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
