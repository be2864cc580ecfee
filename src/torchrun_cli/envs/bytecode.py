"""Give a new environment the bytecode earlier environments compiled for the very same files.

Run by the new environment's own python (`python -I bytecode.py DONOR_ENV...`), so the magic
number and the cache tag are the ones its imports will check; standard library only.
Why: uv hardlinks every installed file from its cache, so a donor environment that holds the
same file (same inode) may have compiled it already. A donor's .pyc is linked only when its
header matches what the import system itself checks (the magic number, and the source's mtime
and size). Nothing is compiled here: compiling all of torch takes ~7 s on 2 cores, while the
job (which may write bytecode into environments torchjob built, launch/__init__.py) compiles
only what it imports, once (bench/bytecode.py measures both designs).
"""

from __future__ import annotations

import importlib.util
import os
import struct
import sys
import sysconfig
from pathlib import Path

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


def main(argv: list[str]) -> int:
    prefix = Path(sys.prefix)
    donors_roots = [Path(a) for a in argv[1:]]
    paths = sysconfig.get_paths()
    sites = {os.path.realpath(paths[k]): paths[k] for k in ("purelib", "platlib")}  # lib64->lib
    linked = 0
    for site in sites.values():
        site_rel = os.path.relpath(site, prefix)
        donors = [root / site_rel for root in donors_roots]
        for src, st in _sources(site):
            if _header_ok(importlib.util.cache_from_source(src), st):
                continue  # shipped in the wheel, and valid
            linked += _link(src, st, os.path.relpath(src, site), donors)
    print(f"Bytecode: linked {linked} files from {len(donors_roots)} earlier environment(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
