"""Archive projects: extracted per run, #subdirectory, and every unsafe archive refused (125)."""

from __future__ import annotations

import io
import json
import os
import tarfile
import zipfile
from pathlib import Path

import pytest

from tests.helpers import Env, torchjob, write

MAIN = b"import os, sys\nprint('archive job', os.path.basename(os.getcwd()), sys.argv[1:])\n"


def tar_with(path: Path, entries: list[tarfile.TarInfo], data: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for info in entries:
            payload = data.get(info.name)
            if payload is not None:
                info.size = len(payload)
            tf.addfile(info, io.BytesIO(payload) if payload is not None else None)
    return path


def file_info(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mode = 0o644
    return info


@pytest.mark.parametrize("suffix", [".tar.gz", ".tgz", ".tar", ".zip"])
def test_archive_with_subdirectory_runs(tmp_path: Path, iso: Env, suffix: str) -> None:
    archive = tmp_path / f"code{suffix}"
    if suffix == ".zip":
        with zipfile.ZipFile(archive, "w") as zf:
            zf.writestr("proj/mnist/main.py", MAIN)
            zf.writestr("proj/README", b"x")
    else:
        with tarfile.open(archive, "w" if suffix == ".tar" else "w:gz") as tf:
            info = file_info("proj/mnist/main.py")
            info.size = len(MAIN)
            tf.addfile(info, io.BytesIO(MAIN))
    res = torchjob("run", "-s", "main.py", "-p", f"{archive}#proj/mnist", "--", "x")
    assert res.returncode == 0, res.stderr
    assert res.stdout == b"archive job mnist ['x']\n"
    run_dir, rec = iso.only_run()
    assert rec["source"]["kind"] == "archive" and rec["source"]["subdirectory"] == "proj/mnist"
    assert (run_dir / "src" / "proj" / "mnist" / "main.py").read_bytes() == MAIN


def refused(iso: Env, archive: Path, needle: str, **env: str) -> None:
    res = torchjob("run", "-s", "main.py", "-p", str(archive), env={**os.environ, **env})
    err = res.stderr.decode()
    assert res.returncode == 125, err
    assert needle in err, err
    assert "Traceback" not in err
    _, rec = iso.only_run()
    assert rec["status"] == "setup_error"
    assert not (iso.tmp / "escaped").exists()


def test_zip_with_dotdot_entry_is_refused(tmp_path: Path, iso: Env) -> None:
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("main.py", MAIN)
        zf.writestr("../../escaped", b"x")
    refused(iso, archive, "points outside")


def test_tar_with_outward_symlink_is_refused(tmp_path: Path, iso: Env) -> None:
    link = tarfile.TarInfo("data")
    link.type, link.linkname = tarfile.SYMTYPE, "../../.."
    refused(
        iso,
        tar_with(tmp_path / "evil.tar.gz", [file_info("main.py"), link], {"main.py": MAIN}),
        "refused archive entry",
    )


def test_tar_with_absolute_path_is_refused(tmp_path: Path, iso: Env) -> None:
    refused(
        iso,
        tar_with(
            tmp_path / "abs.tar.gz",
            [file_info(str(tmp_path / "escaped"))],
            {str(tmp_path / "escaped"): b"x"},
        ),
        "points outside",
    )


def test_tar_with_device_file_is_refused(tmp_path: Path, iso: Env) -> None:
    dev = tarfile.TarInfo("null")
    dev.type, dev.devmajor, dev.devminor = tarfile.CHRTYPE, 1, 3
    refused(
        iso,
        tar_with(tmp_path / "dev.tar.gz", [file_info("main.py"), dev], {"main.py": MAIN}),
        "device",
    )


def test_zip_symlink_is_refused(tmp_path: Path, iso: Env) -> None:
    archive = tmp_path / "link.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        info = zipfile.ZipInfo("data")
        info.external_attr = 0o120777 << 16
        zf.writestr(info, "/etc")
    refused(iso, archive, "symlinks")


def test_archive_over_the_size_limit_is_refused(tmp_path: Path, iso: Env) -> None:
    archive = tar_with(
        tmp_path / "big.tar.gz",
        [file_info("main.py"), file_info("blob")],
        {"main.py": MAIN, "blob": b"\0" * 100_000},
    )
    refused(iso, archive, "too large", TORCHJOB_ARCHIVE_MAX_BYTES="50000")


def test_corrupt_archive_is_refused(tmp_path: Path, iso: Env) -> None:
    good = tar_with(tmp_path / "x.tar.gz", [file_info("main.py")], {"main.py": MAIN * 100})
    broken = tmp_path / "broken.tar.gz"
    broken.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    refused(iso, broken, "corrupt")


def test_files_are_copied_next_to_the_script_without_touching_the_project(
    project: Path, iso: Env
) -> None:
    write(
        project / "sub" / "train.py",
        (
            "import json, pathlib\n"
            "print(json.load(open('sub/config.json'))['lr'],\n"
            "      pathlib.Path('sub/extra/a.txt').read_text())\n"
        ),
    )
    config = write(iso.tmp / "inputs" / "config.json", json.dumps({"lr": 0.5}))
    extra = iso.tmp / "inputs" / "extra"
    write(extra / "a.txt", "A")
    res = torchjob(
        "run", "-s", "sub/train.py", "-p", str(project), "--file", str(config), "--file", str(extra)
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout == b"0.5 A\n"
    assert sorted(p.name for p in (project / "sub").iterdir()) == ["train.py"]
    run_dir, rec = iso.only_run()
    assert rec["cwd"] == str(run_dir / "src")


def test_tar_link_chain_through_long_names_is_refused(tmp_path: Path, iso: Env) -> None:
    """CVE-2025-4517's shape: short links to long folders, a link whose text climbs back out
    through them, and a file written below it. Unpatched Pythons' data filter lets it out."""
    long_name, entries = "d" * 247, [file_info("main.py")]
    path = ""
    for step in "abcdefghijklmnop":
        folder = tarfile.TarInfo(f"{path}{long_name}")
        folder.type, folder.mode = tarfile.DIRTYPE, 0o755
        link = tarfile.TarInfo(f"{path}{step}")
        link.type, link.linkname = tarfile.SYMTYPE, long_name
        entries += [folder, link]
        path += f"{long_name}/"
    deep = tarfile.TarInfo("/".join("abcdefghijklmnop") + "/" + "l" * 254)
    deep.type, deep.linkname = tarfile.SYMTYPE, "../" * 16
    escape = tarfile.TarInfo("escape")
    escape.type, escape.linkname = tarfile.SYMTYPE, deep.name + "/" + "../" * 5 + "escaped"
    entries += [deep, escape, file_info("escape/pwned.txt")]
    refused(
        iso,
        tar_with(
            tmp_path / "chain.tar", entries, {"main.py": MAIN, "escape/pwned.txt": b"PWNED\n"}
        ),
        "refused archive entry",
    )
    assert not list(iso.tmp.rglob("pwned.txt"))


def test_tar_links_that_stay_inside_are_extracted(tmp_path: Path, iso: Env) -> None:
    """A link to a sibling, a link up and across, and a hard link: all inside, all kept."""
    up = tarfile.TarInfo("pkg/conf.py")
    up.type, up.linkname = tarfile.SYMTYPE, "../shared/conf.py"
    near = tarfile.TarInfo("pkg/alias.py")
    near.type, near.linkname = tarfile.SYMTYPE, "conf.py"
    hard = tarfile.TarInfo("copy.py")
    hard.type, hard.linkname = tarfile.LNKTYPE, "shared/conf.py"
    main = (
        b"import pathlib\nprint(pathlib.Path('pkg/alias.py').read_text().strip(), "
        b"pathlib.Path('copy.py').read_text().strip())\n"
    )
    archive = tar_with(
        tmp_path / "ok.tar.gz",
        [file_info("main.py"), file_info("shared/conf.py"), up, near, hard],
        {"main.py": main, "shared/conf.py": b"X = 1\n"},
    )
    res = torchjob("run", "-s", "main.py", "-p", str(archive))
    assert res.returncode == 0, res.stderr
    assert res.stdout == b"X = 1 X = 1\n"


def test_files_never_write_through_a_link_of_the_project(project: Path, iso: Env) -> None:
    """The project's own links (a file link, a folder link) stand where --file puts files:
    they are replaced in the run's copy, and what they point to is left as it was."""
    victim = write(iso.tmp / "victim.txt", "mine\n")
    shared = write(iso.tmp / "shared" / "cfg" / "a.yaml", "a: shared\n").parent
    (project / "data.txt").symlink_to(victim)
    (project / "cfg").symlink_to(shared)
    write(
        project / "main.py",
        "import pathlib\n"
        "print(pathlib.Path('data.txt').read_text().strip(), "
        "pathlib.Path('cfg/a.yaml').read_text().strip())\n",
    )
    mine = write(iso.tmp / "mine" / "data.txt", "theirs\n")
    mine_cfg = write(iso.tmp / "mine2" / "cfg" / "a.yaml", "a: run\n").parent
    res = torchjob(
        "run", "-s", "main.py", "-p", str(project), "--file", str(mine), "--file", str(mine_cfg)
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout == b"theirs a: run\n"
    assert victim.read_text() == "mine\n"
    assert (shared / "a.yaml").read_text() == "a: shared\n"
    assert (project / "data.txt").is_symlink() and (project / "cfg").is_symlink()


def test_files_for_a_script_folder_that_links_out_are_refused(project: Path, iso: Env) -> None:
    outside = iso.tmp / "outdir"
    write(outside / "train.py", "print('outside')\n")
    (project / "tools").symlink_to(outside)
    cfg = write(iso.tmp / "cfg.yaml", "x: 1\n")
    res = torchjob("run", "-s", "tools/train.py", "-p", str(project), "--file", str(cfg))
    assert res.returncode == 125, res.stderr
    assert b"leads outside" in res.stderr
    assert sorted(p.name for p in outside.iterdir()) == ["train.py"]


def test_a_relative_link_out_of_a_local_project_still_works_with_files(
    project: Path, iso: Env
) -> None:
    """With --file the run uses a copy of the project; `data -> ../datasets` must still
    lead to the datasets next to the original."""
    write(iso.tmp / "datasets" / "x.txt", "X\n")
    (project / "data").symlink_to(os.path.relpath(iso.tmp / "datasets", project))
    write(project / "main.py", "print(open('data/x.txt').read().strip())\n")
    cfg = write(iso.tmp / "cfg.yaml", "x: 1\n")
    res = torchjob("run", "-s", "main.py", "-p", str(project), "--file", str(cfg))
    assert res.returncode == 0, res.stderr
    assert res.stdout == b"X\n"
