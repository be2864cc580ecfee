"""Git projects against real repositories and servers: forms, refs, the mirror cache, offline
reruns, concurrency, kill -9, hostile repositories, errors and credentials."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import (
    TORCHJOB,
    Env,
    newest_record,
    run_records,
    torchjob,
    wait_until,
    write,
)
from tests.servers import make_bare_repo

MAIN = (
    "import os, sys\n"
    "here = os.path.dirname(os.path.abspath(__file__))\n"
    "print('v', open(os.path.join(here, 'version.txt')).read().strip(), sys.argv[1:])\n"
)


def repo_with_history(path: Path) -> list[str]:
    """Three commits on main, tag v1 on the first; the script lives in mnist/."""
    commits: list[dict[str, str | bytes]] = [
        {"mnist/main.py": MAIN, "mnist/version.txt": str(i), "README": f"r{i}"} for i in range(3)
    ]
    return make_bare_repo(path, commits, tags={"v1": 0})


def run_git(
    url: str, *extra: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[bytes]:
    return torchjob(
        "run", "-s", "main.py", "-p", url, "--allow-insecure-source", *extra, env=env, cwd=cwd
    )


def test_file_url_refs_and_subdirectory(tmp_path: Path, iso: Env) -> None:
    shas = repo_with_history(tmp_path / "r.git")
    url = f"file://{tmp_path / 'r.git'}#mnist"
    cases = [
        ([], "2", "main"),
        (["-r", "main"], "2", "main"),
        (["-r", "v1"], "0", "v1"),
        (["-r", shas[1]], "1", shas[1]),
        (["-r", shas[1][:7]], "1", shas[1][:7]),
    ]
    for extra, version, ref in cases:
        res = run_git(url, *extra)
        assert res.returncode == 0, res.stderr
        assert res.stdout.decode().split()[:2] == ["v", version]
        rec = newest_record(iso.runs)
        src = rec["source"]
        assert (src["kind"], src["ref"], src["subdirectory"]) == ("git", ref, "mnist")
        assert src["commit"] == shas[int(version)]
        assert src["url"] == f"file://{tmp_path / 'r.git'}"
        assert rec["cwd"].endswith("/src/mnist")
    # Without a subdirectory the script path is relative to the repository root.
    res = torchjob(
        "run",
        "-s",
        "mnist/main.py",
        "-p",
        f"file://{tmp_path / 'r.git'}",
        "--allow-insecure-source",
    )
    assert res.returncode == 0 and res.stdout.split()[:2] == [b"v", b"2"]
    rec = newest_record(iso.runs)
    assert rec["source"]["subdirectory"] is None and rec["cwd"].endswith("/src")


def test_a_run_folder_holds_only_the_subdirectory_it_runs(tmp_path: Path, iso: Env) -> None:
    """Issue 14: a `#subdirectory` run checks out that folder alone (at its place in src/), so
    a big repository does not cost its whole size per run; each run still has its own copy to
    write into, and a subdirectory that is a file is refused as before."""
    files: dict[str, str | bytes] = {f"other/f{i}.txt": "x" * 100 for i in range(50)}
    files.update({"mnist/main.py": MAIN, "mnist/version.txt": "7", "README": "r", "a.txt": "f"})
    make_bare_repo(tmp_path / "r.git", [files])
    url = f"file://{tmp_path / 'r.git'}"
    cwds = []
    for fragment in ("#mnist", "#./mnist/"):  # the same folder, however it is written
        res = run_git(url + fragment)
        assert res.returncode == 0, res.stderr
        assert res.stdout.split()[:2] == [b"v", b"7"]
        cwds.append(Path(newest_record(iso.runs)["cwd"]))
    for cwd in cwds:
        src = cwd.parent
        assert sorted(p.relative_to(src).as_posix() for p in src.rglob("*")) == [
            "mnist",
            "mnist/main.py",
            "mnist/version.txt",
        ]
    (cwds[0] / "version.txt").write_text("changed")  # runs share nothing
    assert (cwds[1] / "version.txt").read_text() == "7"
    # Without a subdirectory the whole tree is there, as before.
    assert run_git(url, "-s", "mnist/main.py").returncode == 0
    whole = Path(newest_record(iso.runs)["cwd"])
    assert (whole / "README").is_file() and len(list((whole / "other").iterdir())) == 50
    res = run_git(url + "#a.txt")
    assert res.returncode == 125 and b"no subdirectory 'a.txt'" in res.stderr, res.stderr


def test_pinned_commit_runs_offline_and_a_moved_branch_is_fetched(
    tmp_path: Path, iso: Env, git_daemon: Any
) -> None:
    shas = repo_with_history(git_daemon.root / "r.git")
    url = git_daemon.url("r.git") + "#mnist"
    assert run_git(url, "-r", "main").returncode == 0
    assert newest_record(iso.runs)["source"]["commit"] == shas[2]
    # The branch moves on the server: the next run fetches and uses the new commit.
    more = make_bare_repo(
        tmp_path / "next.git",
        [{"mnist/main.py": MAIN, "mnist/version.txt": str(i), "README": f"r{i}"} for i in range(4)],
    )
    subprocess.run(
        [
            "git",
            "--git-dir",
            str(tmp_path / "next.git"),
            "push",
            "--force",
            "--quiet",
            str(git_daemon.root / "r.git"),
            "main:main",
        ],
        check=True,
    )
    assert run_git(url, "-r", "main").returncode == 0
    assert newest_record(iso.runs)["source"]["commit"] == more[3]
    git_daemon.stop()
    res = run_git(url, "-r", more[3])
    assert res.returncode == 0, res.stderr
    rec = newest_record(iso.runs)
    assert rec["source"]["cached"] is True and rec["source"]["commit"] == more[3]
    setup = (iso.runs / rec["id"] / "setup.log").read_text()
    assert "fetch" not in setup and "clone" not in setup
    res = run_git(url, "-r", "main")  # a branch needs the server, which is gone
    assert res.returncode == 125 and b"cannot reach" in res.stderr


def test_eight_concurrent_first_runs_make_one_clone(tmp_path: Path, iso: Env) -> None:
    repo_with_history(tmp_path / "r.git")
    argv = [
        *TORCHJOB,
        "run",
        "-q",
        "-s",
        "main.py",
        "--allow-insecure-source",
        "-p",
        f"file://{tmp_path / 'r.git'}#mnist",
    ]
    procs = [subprocess.Popen(argv) for _ in range(8)]
    assert [p.wait(timeout=300) for p in procs] == [0] * 8
    logs = [(d / "setup.log").read_text() for d in iso.run_dirs()]
    assert sum(" clone " in log for log in logs) == 1
    assert sum(" fetch " in log for log in logs) <= 7
    assert len({r["source"]["commit"] for r in run_records(iso.runs)}) == 1


def test_kill_9_during_clone_then_a_clean_rerun(tmp_path: Path, iso: Env, git_daemon: Any) -> None:
    blobs: dict[str, str | bytes] = {f"data/{i}.bin": os.urandom(1 << 20) for i in range(60)}
    shas = make_bare_repo(
        git_daemon.root / "big.git", [{**blobs, "mnist/main.py": MAIN, "mnist/version.txt": "big"}]
    )
    url = git_daemon.url("big.git") + "#mnist"
    proc = subprocess.Popen(
        [*TORCHJOB, "run", "-s", "main.py", "-p", url, "--allow-insecure-source"],
        stderr=subprocess.DEVNULL,
    )
    repos = iso.home / "cache" / "repos"

    def clone_started() -> bool:
        if list(repos.glob("*/mirror.git.tmp-*")):
            return True
        assert proc.poll() is None, "torchjob ended before its clone was seen"
        return False

    wait_until(clone_started, 60, "the clone to start")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not list(repos.glob("*/.ready"))  # nothing looks complete
    res = run_git(url)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split()[:2] == [b"v", b"big"]
    assert newest_record(iso.runs)["source"]["commit"] == shas[0]


def test_hostile_repository_runs_nothing(tmp_path: Path, iso: Env) -> None:
    """Hooks from the user's config, a submodule with an ext:: URL, and a symlink that points
    out of the checkout: no hook runs, no submodule is fetched, the symlinked subdir is refused."""
    sentinel = tmp_path / "pwned"
    hooks = tmp_path / "hooks"
    for name in ("post-checkout", "post-merge", "reference-transaction", "pre-auto-gc"):
        write(hooks / name, f"#!/bin/sh\ntouch {sentinel}\n").chmod(0o755)
    shas = make_bare_repo(
        tmp_path / "evil.git",
        [
            {
                "mnist/main.py": MAIN,
                "mnist/version.txt": "1",
                ".gitmodules": (
                    f'[submodule "sub"]\n\tpath = sub\n\turl = ext::sh -c touch% {sentinel}\n'
                ),
            }
        ],
    )
    work = tmp_path / "work"
    subprocess.run(
        ["git", "clone", "-q", str(tmp_path / "evil.git"), str(work)],
        check=True,
        env={**os.environ, "GIT_CONFIG_GLOBAL": "/dev/null"},
    )
    os.symlink("/etc", work / "outside")
    git = ["git", "-C", str(work), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(
        [*git, "update-index", "--add", "--cacheinfo", f"160000,{shas[0]},sub"], check=True
    )
    subprocess.run([*git, "add", "outside"], check=True)
    subprocess.run([*git, "commit", "-qm", "evil"], check=True)
    subprocess.run([*git, "push", "-q", "origin", "HEAD:main"], check=True)
    config = write(
        tmp_path / "gitconfig", f"[core]\n\thooksPath = {hooks}\n[submodule]\n\trecurse = true\n"
    )
    env = {**os.environ, "GIT_CONFIG_GLOBAL": str(config)}
    res = run_git(f"file://{tmp_path / 'evil.git'}#mnist", env=env)
    assert res.returncode == 0, res.stderr
    res = run_git(f"file://{tmp_path / 'evil.git'}#outside", env=env)
    assert res.returncode == 125 and b"outside the checkout" in res.stderr
    assert not sentinel.exists()


def test_errors_users_meet(tmp_path: Path, iso: Env) -> None:
    repo_with_history(tmp_path / "r.git")
    url = f"file://{tmp_path / 'r.git'}"
    checks = [
        (run_git(url + "#mnist", "-r", "nope"), "unknown ref"),
        (run_git(url + "#missing"), "no subdirectory"),
        (
            torchjob("run", "-s", "nope.py", "-p", url + "#mnist", "--allow-insecure-source"),
            "is not in the checkout",
        ),
        (run_git(f"file://{tmp_path / 'absent.git'}"), "no git repository"),
        (torchjob("run", "-s", "main.py", "-p", "https://127.0.0.1:9/x.git"), "cannot reach"),
    ]
    for res, needle in checks:
        err = res.stderr.decode()
        assert res.returncode == 125, err
        assert needle in err and "Traceback" not in err, err
    statuses = {r["status"] for r in run_records(iso.runs)}
    assert statuses == {"setup_error"}


def test_ssh_url_form_with_key_and_a_refused_key(tmp_path: Path, iso: Env, sshd: Any) -> None:
    shas = repo_with_history(tmp_path / "r.git")
    url = sshd.add_repo(tmp_path / "r.git", "r.git")
    assert url.startswith("git@127.0.0.1:")
    env = {**os.environ, **sshd.env(good=True)}
    res = torchjob("run", "-s", "main.py", "-p", url + "#mnist", "-r", "v1", env=env)
    assert res.returncode == 0, res.stderr
    assert newest_record(iso.runs)["source"]["commit"] == shas[0]
    res = torchjob("run", "-s", "mnist/main.py", "-p", sshd.ssh_url("r.git"), env=env)
    assert res.returncode == 0, res.stderr  # the ssh:// form, without a subdirectory
    assert newest_record(iso.runs)["source"]["commit"] == shas[2]
    t0 = time.monotonic()
    res = torchjob(
        "run",
        "-s",
        "main.py",
        "-p",
        url.replace("r.git", "r2.git") + "#mnist",
        env={**os.environ, **sshd.env(good=False)},
    )
    assert res.returncode == 125 and b"authentication refused" in res.stderr, res.stderr
    assert time.monotonic() - t0 < 30  # no prompt, no hang


def test_https_token_stays_out_of_urls_logs_records_and_argv(
    tmp_path: Path, iso: Env, https_server: Any
) -> None:
    token = "tjtoken-" + os.urandom(8).hex()
    shas = repo_with_history(https_server.git_root / "r.git")
    https_server.require_token = token
    env = {**os.environ, "GIT_SSL_CAINFO": str(https_server.ca_file), "MY_TOKEN": token}
    spec = write(
        tmp_path / "job.yaml",
        (
            f"project: {https_server.url('/git/r.git')}#mnist\nscript: main.py\n"
            "git_token_env: MY_TOKEN\n"
        ),
    )
    seen: set[str] = set()
    done = threading.Event()

    def watch() -> None:  # every git process's argv while the run goes on
        while not done.is_set():
            for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
                with contextlib.suppress(OSError):
                    seen.add(cmdline.read_bytes().decode(errors="replace"))

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        res = torchjob("run", str(spec), env=env)
    finally:
        done.set()
        watcher.join()
    assert res.returncode == 0, res.stderr
    assert newest_record(iso.runs)["source"]["commit"] == shas[2]
    assert any(token not in a and a for a in https_server.auth_seen)  # sent, as a header
    assert any("git" in c for c in seen)
    assert not [c for c in seen if token in c]
    run_dir = iso.runs / newest_record(iso.runs)["id"]
    for path in [*run_dir.glob("*"), *(iso.home / "cache").rglob("*")]:
        if path.is_file():
            assert token.encode() not in path.read_bytes(), path
    assert token.encode() not in res.stdout + res.stderr
    https_server.require_token = "another"
    res = torchjob("run", str(spec), env=env)
    assert res.returncode == 125 and b"authentication refused" in res.stderr


def test_transient_server_errors_are_retried(tmp_path: Path, iso: Env, https_server: Any) -> None:
    shas = repo_with_history(https_server.git_root / "r.git")
    env = {**os.environ, **https_server.client_env()}
    url = https_server.url("/git/r.git") + "#mnist"
    https_server.fail_next = 2  # the first clone and its first retry meet a 503
    res = torchjob("run", "-s", "main.py", "-p", url, env=env)
    assert res.returncode == 0, res.stderr
    assert newest_record(iso.runs)["source"]["commit"] == shas[2]
    setup = (iso.runs / newest_record(iso.runs)["id"] / "setup.log").read_text()
    assert setup.count(" clone ") == 3 and "503" in setup
    https_server.fail_next = 3  # more than two retries: a clear failure
    res = torchjob("run", "-s", "main.py", "-p", url, env=env)
    assert res.returncode == 125, res.stderr
    assert b"git failed" in res.stderr and b"503" in res.stderr


def test_https_archive_download_is_cached(tmp_path: Path, iso: Env, https_server: Any) -> None:
    import io
    import tarfile

    data = MAIN.encode()
    with tarfile.open(https_server.files / "code.tgz", "w:gz") as tf:
        for name, payload in (("mnist/main.py", data), ("mnist/version.txt", b"tgz")):
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tf.addfile(info, io.BytesIO(payload))
    env = {**os.environ, "SSL_CERT_FILE": str(https_server.ca_file)}
    signature = "Sig" + os.urandom(8).hex()  # a pre-signed URL's query: a credential
    url = https_server.url("/files/code.tgz") + f"?X-Signature={signature}#mnist"
    for _ in range(2):
        res = torchjob("run", "-s", "main.py", "-p", url, env=env)
        assert res.returncode == 0, res.stderr
        assert res.stdout.split()[:2] == [b"v", b"tgz"]
        assert signature.encode() not in res.stdout + res.stderr
    run_dir = iso.runs / newest_record(iso.runs)["id"]
    setup = (run_dir / "setup.log").read_text()
    assert "unchanged (304)" in setup
    shown = https_server.url("/files/code.tgz") + "?****"
    assert newest_record(iso.runs)["source"]["url"] == shown
    for path in [*run_dir.glob("*"), *(iso.home / "cache").rglob("*")]:
        if path.is_file():
            assert signature.encode() not in path.read_bytes(), path
    res = torchjob("run", "-s", "main.py", "-p", url)  # the CA is not trusted: refused
    assert res.returncode == 125 and b"cannot download" in res.stderr


def test_local_git_work_tree_commit_and_dirty(tmp_path: Path, iso: Env) -> None:
    shas = repo_with_history(tmp_path / "r.git")
    work = tmp_path / "work"
    subprocess.run(["git", "clone", "-q", str(tmp_path / "r.git"), str(work)], check=True)
    assert torchjob("run", "-q", "-s", "main.py", "-p", str(work / "mnist")).returncode == 0
    source = newest_record(iso.runs)["source"]
    assert (source["commit"], source["dirty"]) == (shas[2], False)
    (work / "mnist" / "version.txt").write_text("changed")
    assert torchjob("run", "-q", "-s", "main.py", "-p", str(work / "mnist")).returncode == 0
    assert newest_record(iso.runs)["source"]["dirty"] is True


def test_submodules_only_when_asked(tmp_path: Path, iso: Env) -> None:
    lib = make_bare_repo(tmp_path / "lib.git", [{"helper.py": "VALUE = 'from submodule'\n"}])
    make_bare_repo(tmp_path / "app.git", [{"main.py": "print('app')\n"}])
    work = tmp_path / "work"
    subprocess.run(["git", "clone", "-q", str(tmp_path / "app.git"), str(work)], check=True)
    git = ["git", "-C", str(work), "-c", "user.name=t", "-c", "user.email=t@t"]
    write(work / ".gitmodules", '[submodule "lib"]\n\tpath = vendor/lib\n\turl = ../lib.git\n')
    subprocess.run(
        [*git, "update-index", "--add", "--cacheinfo", f"160000,{lib[0]},vendor/lib"], check=True
    )
    write(
        work / "main.py",
        "import sys\nsys.path.insert(0, 'vendor/lib')\nimport helper\nprint(helper.VALUE)\n",
    )
    subprocess.run([*git, "add", ".gitmodules", "main.py"], check=True)
    subprocess.run([*git, "commit", "-qm", "sub"], check=True)
    subprocess.run([*git, "push", "-q", "origin", "HEAD:main"], check=True)
    spec = write(
        tmp_path / "job.yaml",
        f"project: file://{tmp_path / 'app.git'}\nscript: main.py\nallow_insecure_source: true\n",
    )
    res = torchjob("run", str(spec))
    assert res.returncode == 1 and b"ModuleNotFoundError" in res.stderr  # off by default
    spec.write_text(spec.read_text() + "submodules: true\n")
    res = torchjob("run", str(spec))
    assert res.returncode == 0, res.stderr
    assert res.stdout == b"from submodule\n"


def test_cache_list_and_prune(tmp_path: Path, iso: Env) -> None:
    repo_with_history(tmp_path / "r.git")
    assert run_git(f"file://{tmp_path / 'r.git'}#mnist").returncode == 0
    listed = json.loads(torchjob("cache", "list", "--json").stdout)
    assert len(listed) == 1 and listed[0]["url"] == f"file://{tmp_path / 'r.git'}"
    assert listed[0]["size_bytes"] > 0
    assert torchjob("cache", "prune").stdout == b""  # used just now: kept
    out = torchjob("cache", "prune", "--unused-for", "0").stdout.decode()
    assert "removed" in out
    assert json.loads(torchjob("cache", "list", "--json").stdout) == []


@pytest.mark.parametrize("form", ["token-as-user", "user-and-password"])
def test_credentials_written_in_the_url_stay_secret(
    tmp_path: Path, iso: Env, https_server: Any, form: str
) -> None:
    """`https://ghp_TOKEN@host/...` (GitHub's form) is a secret like a password; with
    `https://bob:TOKEN@host/...` the login bob is what the server sees."""
    token = "ghp_" + os.urandom(12).hex()
    shas = repo_with_history(https_server.git_root / "r.git")
    https_server.require_token = token
    userinfo = token if form == "token-as-user" else f"bob:{token}"
    url = https_server.url("/git/r.git").replace("https://", f"https://{userinfo}@")
    res = torchjob(
        "run",
        "-s",
        "main.py",
        "-p",
        url + "#mnist",
        env={**os.environ, "GIT_SSL_CAINFO": str(https_server.ca_file)},
    )
    assert res.returncode == 0, res.stderr
    rec = newest_record(iso.runs)
    assert rec["source"]["commit"] == shas[2]
    logins = {
        base64.b64decode(a.split()[-1]).decode().split(":")[0]
        for a in https_server.auth_seen
        if a.startswith("Basic ")
    }
    assert logins == ({"x-access-token"} if form == "token-as-user" else {"bob"})
    run_dir = iso.runs / rec["id"]
    for path in [*run_dir.glob("*"), *(iso.home / "cache").rglob("*")]:
        if path.is_file():
            assert token.encode() not in path.read_bytes(), path
    assert token.encode() not in res.stdout + res.stderr


def test_remotes_that_differ_only_by_dot_git_get_their_own_mirrors(
    tmp_path: Path, iso: Env
) -> None:
    """`x` and `x.git` are two repositories on most servers (and here): one mirror each."""
    make_bare_repo(tmp_path / "x", [{"main.py": "print('I am x')\n"}])
    make_bare_repo(tmp_path / "x.git", [{"main.py": "print('I am x.git')\n"}])
    for name in ("x", "x.git"):
        res = run_git(f"file://{tmp_path / name}")
        assert res.returncode == 0, res.stderr
        assert res.stdout == f"I am {name}\n".encode()
    assert len(list((iso.home / "cache" / "repos").glob("*/mirror.git"))) == 2


def test_a_new_default_branch_of_the_remote_is_followed(tmp_path: Path, iso: Env) -> None:
    """No ref means the remote's default branch as it is now, not as it was at the clone."""
    bare = tmp_path / "r.git"
    shas = repo_with_history(bare)
    url = f"file://{bare}#mnist"
    assert run_git(url).returncode == 0
    assert newest_record(iso.runs)["source"]["ref"] == "main"
    work = tmp_path / "work"
    subprocess.run(["git", "clone", "-q", str(bare), str(work)], check=True)
    git_env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    subprocess.run(["git", "-C", str(work), "checkout", "-q", "-b", "trunk"], check=True)
    (work / "mnist" / "version.txt").write_text("trunk")
    subprocess.run(["git", "-C", str(work), "commit", "-qam", "trunk"], check=True, env=git_env)
    subprocess.run(["git", "-C", str(work), "push", "-q", "origin", "trunk"], check=True)
    subprocess.run(
        ["git", "--git-dir", str(bare), "symbolic-ref", "HEAD", "refs/heads/trunk"], check=True
    )
    subprocess.run(
        ["git", "--git-dir", str(bare), "branch", "-D", "main"], check=True, capture_output=True
    )
    res = run_git(url)
    assert res.returncode == 0, res.stderr
    rec = newest_record(iso.runs)
    trunk = subprocess.run(
        ["git", "--git-dir", str(bare), "rev-parse", "trunk"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert rec["source"]["commit"] == trunk != shas[2]
    assert rec["source"]["ref"] == "trunk"


def test_an_ambiguous_short_sha_is_named_as_such(tmp_path: Path, iso: Env) -> None:
    """1,000 fixed blobs: some four-digit prefix is shared (the same one on every run, as the
    contents and dates are fixed); git resolves such a prefix to nothing."""
    bare = tmp_path / "many.git"
    make_bare_repo(bare, [{"main.py": MAIN, **{f"d/{i}.txt": f"{i}\n" for i in range(1000)}}])
    listing = subprocess.run(
        [
            "git",
            "--git-dir",
            str(bare),
            "cat-file",
            "--batch-all-objects",
            "--batch-check=%(objectname)",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    prefixes = [
        p for p in {sha[:4] for sha in listing} if sum(sha.startswith(p) for sha in listing) > 1
    ]
    assert prefixes, "no shared prefix among the fixed objects"
    res = run_git(f"file://{bare}", "-r", prefixes[0])
    assert res.returncode == 125
    assert b"names more than one object" in res.stderr, res.stderr


def test_git_trace_does_not_break_git_projects(tmp_path: Path, iso: Env) -> None:
    """GIT_TRACE=1 (a user debugging their git setup) made every git-source run exit 125: the
    trace lines on stderr were parsed as commit ids."""
    repo_with_history(tmp_path / "r.git")
    env = {**os.environ, "GIT_TRACE": "1"}
    for _ in range(2):  # the clone, then a fetch into the mirror
        res = run_git(f"file://{tmp_path / 'r.git'}#mnist", env=env)
        assert res.returncode == 0, res.stderr
        assert res.stdout.startswith(b"v 2")
    assert "trace: " in (iso.runs / newest_record(iso.runs)["id"] / "setup.log").read_text()
