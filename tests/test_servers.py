"""Self-tests of the real servers in tests/servers.py, driven by the plain git CLI and urllib, so
that a failing source test points at torchjob and not at its fixture."""

from __future__ import annotations

import base64
import http.client
import os
import shlex
import signal
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.servers import GitDaemon, HttpsServer, Sshd, git, git_env, make_bare_repo

COMMITS: list[dict[str, str | bytes]] = [
    {"README.md": "one\n", "sub/train.py": "print('one')\n"},
    {"sub/train.py": "print('two')\n", "data.bin": bytes(range(256))},
]
TOKEN = "tok-" + "s3cret"


def git_run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    """The git CLI as a user would run it, without failing the test on a non-zero status."""
    return subprocess.run(
        ["git", *args], env=git_env(**(env or {})), capture_output=True, timeout=30, check=False
    )


def assert_clone(url: str, dest: Path, shas: list[str], *git_c: str, **env: str) -> None:
    done = git_run(*git_c, "clone", "-q", url, str(dest), env=env)
    assert done.returncode == 0, done.stderr
    assert git("rev-parse", "HEAD", cwd=dest).strip() == shas[-1]
    assert (dest / "sub" / "train.py").read_text() == "print('two')\n"
    assert (dest / "data.bin").read_bytes() == bytes(range(256))


def test_make_bare_repo_is_deterministic_and_can_move_a_branch(tmp_path: Path) -> None:
    a, b = tmp_path / "a.git", tmp_path / "b.git"
    shas = make_bare_repo(a, COMMITS, tags={"v1": 0})
    assert make_bare_repo(b, COMMITS, tags={"v1": 0}) == shas
    assert git("--git-dir", str(a), "symbolic-ref", "HEAD").strip() == "refs/heads/main"
    assert git("--git-dir", str(a), "cat-file", "-t", "v1").strip() == "tag"
    assert git("--git-dir", str(a), "rev-parse", "v1^{commit}").strip() == shas[0]
    assert git("--git-dir", str(a), "show", "v1:sub/train.py") == "print('one')\n"
    assert not (a / "hooks").exists()
    moved = make_bare_repo(a, [*COMMITS, {"new.txt": "three\n"}])
    assert moved[:2] == shas
    assert git("--git-dir", str(a), "rev-parse", "main").strip() == moved[2] != shas[1]
    other = make_bare_repo(tmp_path / "c.git", COMMITS, branch="dev")
    assert git("--git-dir", str(tmp_path / "c.git"), "symbolic-ref", "HEAD").strip() == (
        "refs/heads/dev"
    )
    assert other == shas  # same trees, parents and dates: the branch name is not in a commit


def test_git_daemon_serves_then_stops(git_daemon: GitDaemon, tmp_path: Path) -> None:
    shas = make_bare_repo(git_daemon.root / "repo.git", COMMITS, tags={"v1": 0})
    url = git_daemon.url("repo.git")
    assert url == f"git://127.0.0.1:{git_daemon.port}/repo.git"
    assert_clone(url, tmp_path / "clone", shas)
    refs = git_run("ls-remote", url).stdout.decode()
    assert f"{shas[0]}\trefs/tags/v1^{{}}" in refs
    missing = git_run("ls-remote", git_daemon.url("nope.git"))
    assert missing.returncode != 0 and b"no such repository" in missing.stderr
    git_daemon.stop()
    started = time.monotonic()
    offline = git_run("ls-remote", url)
    assert offline.returncode != 0 and b"Connection refused" in offline.stderr
    assert time.monotonic() - started < 10


def test_sshd_serves_the_authorized_key(sshd: Sshd, tmp_path: Path) -> None:
    shas = make_bare_repo(tmp_path / "src.git", COMMITS)
    url = sshd.add_repo(tmp_path / "src.git", "org/repo.git")
    assert url == f"git@127.0.0.1:{sshd.prefix}/org/repo.git"
    assert_clone(url, tmp_path / "scp-form", shas, **sshd.env())
    for form in (sshd.ssh_url("org/repo.git"), sshd.ssh_url("org/repo.git", absolute=True)):
        assert form.startswith(f"ssh://git@127.0.0.1:{sshd.port}/")
        done = git_run("ls-remote", form, "HEAD", env=sshd.env())
        assert done.returncode == 0, (form, done.stderr)
        assert done.stdout.decode().split()[0] == shas[-1]
    # A replaced repo is served at once (a moved branch on the server).
    moved = make_bare_repo(tmp_path / "src.git", [*COMMITS, {"c.txt": "3\n"}])
    assert sshd.add_repo(tmp_path / "src.git", "org/repo.git") == url
    done = git_run("ls-remote", url, "refs/heads/main", env=sshd.env())
    assert done.stdout.decode().split()[0] == moved[2]


def test_sshd_refuses_the_other_key_quickly_and_offers_no_shell(sshd: Sshd, tmp_path: Path) -> None:
    make_bare_repo(tmp_path / "src.git", COMMITS)
    url = sshd.add_repo(tmp_path / "src.git", "refused.git")
    started = time.monotonic()
    refused = git_run("ls-remote", url, env=sshd.env(good=False))
    assert refused.returncode != 0
    assert b"Permission denied (publickey)" in refused.stderr
    assert time.monotonic() - started < 10
    ssh = [*shlex.split(sshd.ssh_command()), "git@127.0.0.1"]
    shell = subprocess.run([*ssh, "id"], capture_output=True, timeout=30, check=False)
    assert shell.returncode != 0 and b"unrecognized command" in shell.stderr  # git-shell
    (tmp_path / "empty_known_hosts").write_text("")
    strict = sshd.ssh_command().replace(str(sshd.known_hosts), str(tmp_path / "empty_known_hosts"))
    unknown = git_run("ls-remote", url, env={"GIT_SSH_COMMAND": strict})
    assert unknown.returncode != 0 and b"Host key verification failed" in unknown.stderr


def test_https_git_requires_the_token(https_server: HttpsServer, tmp_path: Path) -> None:
    shas = make_bare_repo(https_server.git_root / "repo.git", COMMITS)
    https_server.require_token = TOKEN
    url = https_server.url("git/repo.git")
    env = https_server.client_env()
    started = time.monotonic()
    anonymous = git_run("clone", "-q", url, str(tmp_path / "no"), env=env)
    assert anonymous.returncode != 0 and time.monotonic() - started < 10
    assert b"terminal prompts disabled" in anonymous.stderr  # no prompt, no hang
    info_refs = "/git/repo.git/info/refs?service=git-upload-pack"
    assert ("GET", info_refs, 401) in https_server.requests
    wrong = f"Authorization: Bearer {TOKEN}x"
    assert git_run("-c", f"http.extraHeader={wrong}", "ls-remote", url, env=env).returncode != 0
    basic = "Basic " + base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode()
    assert_clone(
        url, tmp_path / "basic", shas, "-c", f"http.extraHeader=Authorization: {basic}", **env
    )
    assert basic in https_server.auth_seen
    assert ("POST", "/git/repo.git/git-upload-pack", 200) in https_server.requests
    bearer = f"Bearer {TOKEN}"
    assert_clone(
        url, tmp_path / "bearer", shas, "-c", f"http.extraHeader=Authorization: {bearer}", **env
    )
    assert bearer in https_server.auth_seen
    assert all(TOKEN not in path for path in https_server.paths_seen)


def test_https_git_push_with_a_chunked_body(https_server: HttpsServer, tmp_path: Path) -> None:
    make_bare_repo(https_server.git_root / "repo.git", COMMITS)
    https_server.require_token = TOKEN
    header = f"http.extraHeader=Authorization: Bearer {TOKEN}"
    url, env = https_server.url("git/repo.git"), https_server.client_env()
    assert git_run("-c", header, "clone", "-q", url, str(tmp_path / "w"), env=env).returncode == 0
    (tmp_path / "w" / "big.bin").write_bytes(os.urandom(300_000))  # > postBuffer: chunked
    git("add", "big.bin", cwd=tmp_path / "w")
    git("commit", "-q", "-m", "big", cwd=tmp_path / "w")
    pushed = git_run(
        "-C",
        str(tmp_path / "w"),
        "-c",
        header,
        "-c",
        "http.postBuffer=65536",
        "push",
        "-q",
        "origin",
        "main",
        env=env,
    )
    assert pushed.returncode == 0, (pushed.stderr, https_server.backend_log)
    head = git("rev-parse", "HEAD", cwd=tmp_path / "w").strip()
    served = git("--git-dir", str(https_server.git_root / "repo.git"), "rev-parse", "main")
    assert served.strip() == head


def test_https_holds_a_clone_so_a_test_can_kill_it(
    https_server: HttpsServer, tmp_path: Path
) -> None:
    shas = make_bare_repo(https_server.git_root / "repo.git", COMMITS)
    https_server.hold_packs = threading.Event()
    clone = subprocess.Popen(
        ["git", "clone", "-q", https_server.url("git/repo.git"), str(tmp_path / "killed")],
        env=git_env(**https_server.client_env()),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert https_server.pack_requested.wait(10)  # mid-clone: refs listed, pack not sent
    finally:
        os.killpg(clone.pid, signal.SIGKILL)
        clone.wait(10)
    assert clone.returncode == -signal.SIGKILL
    https_server.hold_packs.set()
    https_server.hold_packs = None
    assert not (tmp_path / "killed" / "sub").exists()
    assert_clone(
        https_server.url("git/repo.git"), tmp_path / "again", shas, **https_server.client_env()
    )


def test_https_refuses_clients_that_do_not_trust_the_ca(
    https_server: HttpsServer, tmp_path: Path
) -> None:
    make_bare_repo(https_server.git_root / "repo.git", COMMITS)
    done = git_run("clone", "-q", https_server.url("git/repo.git"), str(tmp_path / "c"))
    assert done.returncode != 0 and b"certificate" in done.stderr
    missing = git_run("ls-remote", https_server.url("git/nope.git"), env=https_server.client_env())
    assert missing.returncode != 0
    assert ("GET", "/git/nope.git/info/refs?service=git-upload-pack", 404) in (
        https_server.requests
    )


def test_https_serves_static_files(https_server: HttpsServer) -> None:
    payload = os.urandom(200_000)
    (https_server.files / "proj.tar.gz").write_bytes(payload)
    (https_server.git_root / "secret").write_text("not a file to serve")
    url = https_server.url("files/proj.tar.gz")
    assert url == f"https://127.0.0.1:{https_server.port}/files/proj.tar.gz"
    with urllib.request.urlopen(url, context=https_server.ssl_context(), timeout=10) as r:  # noqa: S310
        assert r.status == 200 and r.read() == payload
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(  # noqa: S310
            https_server.url("files/nope.zip"), context=https_server.ssl_context(), timeout=10
        )
    assert missing.value.code == 404
    conn = http.client.HTTPSConnection(
        "127.0.0.1", https_server.port, context=https_server.ssl_context(), timeout=10
    )
    conn.request("GET", "/files/..%2Fhttps-git%2Fsecret")
    assert conn.getresponse().status == 404
    conn.close()
    with pytest.raises(urllib.error.URLError) as untrusted:
        urllib.request.urlopen(url, context=ssl.create_default_context(), timeout=10)  # noqa: S310
    assert isinstance(untrusted.value.reason, ssl.SSLCertVerificationError)
    https_server.stop()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url, context=https_server.ssl_context(), timeout=10)  # noqa: S310
