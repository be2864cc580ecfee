"""uv environments get the .pyc files an earlier environment compiled for the very same installed
files, and the build compiles what importing the top packages loads (real uv, the test
wheelhouse, offline; real interpreters and files for the import closure). The jobs run with
PYTHONDONTWRITEBYTECODE=1, so every .pyc seen is the build's."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import Env, gone_within, newest_record, setup_log, torchjob, wait_until, write
from torchrun_cli.envs.builders import BYTECODE

SHOW = "import tinya\nprint(tinya.VALUE)\n"


def build(project: Path, iso: Env, requirements: str) -> tuple[Path, str]:
    """Run main.py in a uv environment for requirements; its folder and the run's setup.log."""
    write(project / "requirements.txt", requirements)
    argv = ["run", "-s", "main.py", "-p", str(project), "--env-manager", "uv"]
    res = torchjob(*argv, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    assert res.returncode == 0, res.stderr
    rec = newest_record(iso.runs)
    assert rec["environment"]["reused"] is False
    return Path(rec["environment"]["path"]), setup_log(iso.runs, rec)


def module(env: Path, name: str) -> tuple[Path, Path]:
    """A package's __init__.py in env and its .pyc."""
    (site,) = env.glob("lib/python*/site-packages")
    source = site / name / "__init__.py"
    (pyc,) = (site / name / "__pycache__").glob("__init__.*.pyc")
    return source, pyc


def loads_from_pyc(env: Path, name: str) -> bool:
    """Whether the environment's python imports name from its .pyc (`-v` says "matches")."""
    out = subprocess.run(
        [str(env / "bin" / "python"), "-v", "-c", f"import {name}"],
        capture_output=True,
        text=True,
        check=True,
    )
    return any(
        "matches" in line and f"/{name}/__init__.py" in line for line in out.stderr.splitlines()
    )


def test_a_new_environment_links_the_bytecode_of_an_earlier_one(
    project: Path, iso: Env, offline: Any
) -> None:
    write(project / "main.py", SHOW)
    first, log1 = build(project, iso, "tinyb==1.0\n")
    # tinyb is the top package (nothing requires it); importing it imports tinya
    assert "linked 0 files from 0 earlier environment(s), compiled 2 that importing tinyb" in log1
    # a new key (the requirements file changed) that installs the same files
    second, log2 = build(project, iso, "tinyb==1.0\ntinya==2.0\n")
    assert first != second
    assert "linked 0 " not in log2 and "from 1 earlier environment(s)" in log2
    for name in ("tinya", "tinyb"):
        src1, pyc1 = module(first, name)
        src2, pyc2 = module(second, name)
        assert os.stat(src1).st_ino == os.stat(src2).st_ino  # uv linked both from its cache
        assert os.stat(pyc1).st_ino == os.stat(pyc2).st_ino  # ... and torchjob the bytecode
        assert loads_from_pyc(second, name)


def test_bytecode_of_another_version_or_a_stale_pyc_is_never_linked(
    project: Path, iso: Env, offline: Any
) -> None:
    write(project / "main.py", SHOW)
    old, _ = build(project, iso, "tinya==1.0\n")
    donor, _ = build(project, iso, "tinyb==1.0\n")  # tinya 2.0, its own compile
    _, old_pyc = module(old, "tinya")
    _, donor_pyc = module(donor, "tinya")
    assert os.stat(old_pyc).st_ino != os.stat(donor_pyc).st_ino  # 1.0's .pyc was not taken
    # spoil the donor's .pyc of tinyb: its header no longer matches the source's mtime
    _, b_pyc = module(donor, "tinyb")
    data = bytearray(b_pyc.read_bytes())
    data[8:12] = (int.from_bytes(data[8:12], "little") ^ 1).to_bytes(4, "little")
    spoiled = b_pyc.with_suffix(".new")
    spoiled.write_bytes(bytes(data))
    spoiled.replace(b_pyc)
    fresh, log = build(project, iso, "tinyb==1.0\n# same packages, new key\n")
    _, fresh_b = module(fresh, "tinyb")
    _, fresh_a = module(fresh, "tinya")
    assert os.stat(fresh_b).st_ino != os.stat(b_pyc).st_ino  # compiled, not linked
    assert os.stat(fresh_a).st_ino == os.stat(donor_pyc).st_ino
    assert loads_from_pyc(fresh, "tinyb") and loads_from_pyc(fresh, "tinya")
    res = torchjob("run", "-s", "main.py", "-p", str(project), "--env-manager", "uv")
    assert res.stdout == b"tinya 2.0\n"
    assert "linked 1 files from 2 earlier environment(s), compiled 2 " in log


def test_a_same_size_same_mtime_file_of_another_version_is_never_linked(
    project: Path, iso: Env, offline: Any
) -> None:
    """tinya 1.0 and 2.0 have __init__.py files of the same size; uv stamps mtimes in whole
    seconds, so they can also share an mtime. Only the inode tells them apart."""
    write(project / "main.py", SHOW)
    old, _ = build(project, iso, "tinya==1.0\n")
    donor, _ = build(project, iso, "tinyb==1.0\n")  # holds tinya 2.0
    old_src, old_pyc = module(old, "tinya")
    donor_src, donor_pyc = module(donor, "tinya")
    assert old_src.stat().st_size == donor_src.stat().st_size
    stamp = int(donor_src.stat().st_mtime)
    os.utime(old_src, (stamp, stamp))  # the same mtime (and inode: uv's cache) for 1.0 ...
    old_pyc.unlink()  # ... and the only .pyc on offer is 2.0's, whose header then matches
    fresh, log = build(project, iso, "tinya==1.0\n# a new key\n")
    _, fresh_pyc = module(fresh, "tinya")
    assert os.stat(fresh_pyc).st_ino != os.stat(donor_pyc).st_ino
    assert "linked 0 files from 2 earlier environment(s), compiled 1 " in log
    res = torchjob("run", "-s", "main.py", "-p", str(project), "--env-manager", "uv")
    assert res.stdout == b"tinya 1.0\n"


def test_hash_based_bytecode_is_linked_too(project: Path, iso: Env, offline: Any) -> None:
    """.pyc files the import system checks by the source's hash (what py_compile writes when
    SOURCE_DATE_EPOCH is set, in Nix shells and reproducible builds) can be shared as well."""
    write(project / "main.py", SHOW)
    first, _ = build(project, iso, "tinyb==1.0\n")
    src1, pyc1 = module(first, "tinya")
    compile_hashed = "import py_compile, sys; py_compile.compile(sys.argv[1], sys.argv[2])"
    subprocess.run(
        [str(first / "bin" / "python"), "-c", compile_hashed, str(src1), str(pyc1)],
        env={**os.environ, "SOURCE_DATE_EPOCH": "1"},
        check=True,
    )
    assert pyc1.read_bytes()[4] == 3  # flags: hash-based, checked
    second, log = build(project, iso, "tinyb==1.0\n# a new key\n")
    _, pyc2 = module(second, "tinya")
    assert os.stat(pyc1).st_ino == os.stat(pyc2).st_ino
    assert "linked 2 files from 1 earlier environment(s), compiled 2 " in log  # found valid


def interpreter(version: str) -> str | None:
    """A working python of that version: on PATH, or one pyenv installed (the tests' HOME is
    a temporary one)."""
    found = [shutil.which(f"python{version}")]
    pyenv = Path(os.environ.get("PYENV_ROOT") or Path(pwd.getpwuid(os.getuid()).pw_dir, ".pyenv"))
    found += sorted(map(str, pyenv.glob(f"versions/{version}.*/bin/python{version}")))
    for python in filter(None, found):
        if subprocess.run([python, "-c", ""], capture_output=True, check=False).returncode == 0:
            return python
    return None


def fake_site(
    tmp_path: Path,
    packages: dict[str, dict[str, str]],
    requires: dict[str, str],
    python: str = sys.executable,
) -> Path:
    """A real venv whose site-packages holds the given files and, per top package, a
    .dist-info with METADATA and RECORD, as an installer leaves them."""
    venv = tmp_path / "venv"
    subprocess.run([python, "-m", "venv", "--without-pip", str(venv)], check=True)
    (site,) = venv.glob("lib/python*/site-packages")
    for name, files in packages.items():
        for rel, text in files.items():
            write(site / rel, text)
        meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n"
        meta += "".join(f"Requires-Dist: {dep}\n" for dep in requires.get(name, "").split())
        write(site / f"{name}-1.0.dist-info" / "METADATA", meta + "\nA description.\n")
        write(site / f"{name}-1.0.dist-info" / "RECORD", "".join(f"{f},,\n" for f in files))
    return venv


@pytest.mark.parametrize("version", ["", "3.8", "3.13"])
def test_the_build_compiles_what_importing_the_top_packages_loads(
    tmp_path: Path, version: str
) -> None:
    """What runs at import (module level, class bodies, try and if blocks, relative imports,
    into other distributions) is compiled; what a function imports when called, what `if
    TYPE_CHECKING:` guards and what nothing imports are left to the job. The script runs on
    the environment's own python: this one, the oldest and the newest found here."""
    python = interpreter(version) if version else sys.executable
    if python is None:
        pytest.skip(f"no python{version} here (PATH, pyenv)")
    init = (
        "from typing import TYPE_CHECKING\n"
        "from . import used\n"
        "if TYPE_CHECKING:\n"
        "    from . import typed\n"
        "class C:\n"
        "    import top.inclass\n"
        "def later():\n"
        "    from . import called\n"
        "try:\n"
        "    from dep.sub import thing\n"
        "except ImportError:\n"
        "    pass\n"
    )
    top = {
        "top/__init__.py": init,
        "top/used.py": "from .deep import x\n",
        "top/deep.py": "x = 1\n",
    }
    top.update({f"top/{m}.py": "" for m in ("typed", "inclass", "called", "unused")})
    dep = {"dep/__init__.py": "", "dep/sub.py": "thing = 1\n", "dep/other.py": ""}
    venv = fake_site(tmp_path, {"top": top, "dep": dep}, {"top": "dep>=1"}, python)
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-I", str(BYTECODE)], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert "compiled 6 that importing top loads" in out.stdout  # dep is top's, not a top
    (site,) = venv.glob("lib/python*/site-packages")
    compiled = sorted(f"{p.parent.parent.name}/{p.name.split('.')[0]}" for p in site.rglob("*.pyc"))
    assert compiled == [
        "dep/__init__",
        "dep/sub",
        "top/__init__",
        "top/deep",
        "top/inclass",
        "top/used",
    ]
    assert loads_from_pyc(venv, "top")


def test_compile_workers_die_with_the_step(tmp_path: Path) -> None:
    """kill -9 of the bytecode step (what PDEATHSIG does to it when torchjob is killed) must
    not leave its pool's workers compiling into a folder that is about to be deleted."""
    body = "".join(f"def f{i}(x):\n    return [x * {i} for _ in range({i})]\n" for i in range(400))
    files = {f"big/m{n}.py": body for n in range(600)}
    files["big/__init__.py"] = "".join(f"from . import m{n}\n" for n in range(600))
    venv = fake_site(tmp_path, {"big": files}, {})
    step = subprocess.Popen(
        [str(venv / "bin" / "python"), "-I", str(BYTECODE)], stdout=subprocess.DEVNULL
    )

    def workers_seen() -> list[int]:
        workers = children(step.pid)
        assert workers or step.poll() is None, "the step ended before its workers could be seen"
        return workers

    workers = wait_until(workers_seen, 60, "the step's pool workers", interval=0.01)
    step.kill()
    step.wait()
    assert gone_within(workers, 30)


def children(pid: int) -> list[int]:
    """Processes whose parent is pid (from /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out
