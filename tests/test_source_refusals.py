"""Sources torchjob refuses before any git process starts: exit 125, one clear line, and an
injection attempt never runs (its sentinel file never appears)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.helpers import Env, torchjob, write
from torchrun_cli.errors import SetupError
from torchrun_cli.source.giturl import check_ref, parse_url


def sentinel(tmp: Path) -> Path:
    return tmp / "pwned"


def hostile_urls(tmp: Path) -> list[str]:
    s = sentinel(tmp)
    return [
        f"ext::sh -c touch% {s}",
        f"ext::touch {s}",
        "fd::17",
        f"--upload-pack=touch {s}",
        f"-u touch {s}",
        f"ssh://-oProxyCommand=touch%20{s}/x",
        f"ssh://git@-oProxyCommand=touch%20{s}/x",
        f"-oProxyCommand=touch {s}@host:repo",
        f"git@host:--upload-pack=touch {s}",
        "http://127.0.0.1:9/repo.git",
        "git://127.0.0.1:9/repo.git",
        "file:///etc",
        "ftp://127.0.0.1/repo.git",
        "https://exa mple.com/repo.git",
        "https://127.0.0.1:notaport/repo.git",
        "https:///nohost",
        "git@host:repo\nfoo",
        "https://host/org/repo.git?private_token=abc",
    ]


def test_hostile_urls_are_refused_without_running_anything(project: Path, iso: Env) -> None:
    write(project / "a.py", "print('never')\n")
    for url in hostile_urls(iso.tmp):
        res = torchjob("run", "-s", "a.py", "-p", url, cwd=project)
        err = res.stderr.decode()
        assert res.returncode == 125, (url, err)
        assert "refused" in err and "Traceback" not in err, (url, err)
        assert len(err.strip().splitlines()) == 1, err
    assert not sentinel(iso.tmp).exists()
    assert not (iso.home / "cache" / "repos").exists() or not any(
        (iso.home / "cache" / "repos").iterdir()
    )


@pytest.mark.parametrize(
    "ref",
    [
        "-x",
        "--upload-pack=evil",
        "a..b",
        "a b",
        "x~1",
        "x^",
        "a:b",
        "?",
        "*",
        "[x",
        "a\\b",
        "a/",
        "/a",
        "a.lock",
        ".hidden",
        "a/.b",
        "@",
        "a@{1}",
        "a//b",
        "end.",
        "ctl\x01",
    ],
)
def test_bad_refs_are_refused_like_git_check_ref_format(ref: str) -> None:
    with pytest.raises(SetupError, match="refused ref"):
        check_ref(ref)
    real = subprocess.run(
        ["git", "check-ref-format", "--allow-onelevel", ref], capture_output=True, check=False
    )
    assert real.returncode != 0 or ref.startswith("-")  # git agrees (it has no '-' rule)


@pytest.mark.parametrize(
    "ref",
    ["main", "v1.0", "release/2026-11", "feature/x_y", "0123abcd", "a" * 40, "a@b", "tag+meta"],
)
def test_good_refs_pass_like_git_check_ref_format(ref: str) -> None:
    check_ref(ref)
    real = subprocess.run(
        ["git", "check-ref-format", "--allow-onelevel", ref], capture_output=True, check=False
    )
    assert real.returncode == 0


def test_bad_subdirectories_and_refs_refused_through_the_cli(project: Path, iso: Env) -> None:
    write(project / "a.py", "print('never')\n")
    for extra in (
        ["-p", "git@127.0.0.1:x.git#../up"],
        ["-p", "git@127.0.0.1:x.git#/etc"],
        ["-p", "git@127.0.0.1:x.git", "-r", "--upload-pack=touch x"],
        ["-p", "git@127.0.0.1:x.git", "-r", "a..b"],
    ):
        for dry in ([], ["--dry-run"]):  # the plan refuses what the run would
            res = torchjob("run", "-s", "a.py", *extra, *dry, cwd=project)
            assert res.returncode == 125, (extra, dry, res.stderr)
            assert b"refused" in res.stderr


def test_a_bad_limit_in_the_environment_is_one_clear_line(project: Path) -> None:
    res = torchjob(
        "run",
        "-s",
        "a.py",
        "-p",
        "git@127.0.0.1:x.git",
        env={**os.environ, "TORCHJOB_GIT_TIMEOUT": "ten"},
    )
    assert res.returncode == 2
    assert res.stderr.decode().strip().startswith("torchjob: error: TORCHJOB_GIT_TIMEOUT='ten'")
    assert b"Traceback" not in res.stderr and b"internal error" not in res.stderr


def test_credentials_never_shown_in_refusals(project: Path) -> None:
    res = torchjob("run", "-s", "a.py", "-p", "http://user:s3cr3tT0ken@127.0.0.1/r.git")
    assert res.returncode == 125
    assert b"s3cr3tT0ken" not in res.stderr and b"127.0.0.1" in res.stderr


def test_url_forms_and_cache_keys() -> None:
    scp = parse_url("git@github.com:pytorch/examples.git", False)
    assert (scp.scheme, scp.host, scp.url) == ("ssh", "github.com", scp.url)
    ssh = parse_url("ssh://git@host:2222/org/repo.git", False)
    https = parse_url("https://x-access-token:tok123@Host.example/org/repo.git", False)
    assert https.token == "tok123" and "tok123" not in https.url and "tok123" not in https.key
    same = parse_url("https://host.example/org/repo.git", False)
    assert https.key == same.key  # credentials and host case do not matter
    other = parse_url("https://host.example/org/repo", False)
    assert other.key != https.key  # `repo` and `repo.git` may be two repositories
    home = parse_url("git@github.com:/pytorch/examples.git", False)
    assert home.key != scp.key  # an absolute path is not the home-relative one
    assert len({scp.key, ssh.key, https.key}) == 3


def test_an_scp_host_starting_with_a_dash_is_no_git_url() -> None:
    """ssh would read `-oProxyCommand=...` as an option: never a host."""
    with pytest.raises(SetupError, match="refused git URL"):
        parse_url("git@-oProxyCommand=touch:repo", allow_insecure=False)


def test_a_refused_user_part_is_shown(project: Path) -> None:
    """The refusal of `ssh://-oProxyCommand=...@host/...` used to hide the user part, which was
    the very thing refused; passwords and tokens stay masked."""
    res = torchjob("run", "-s", "a.py", "-p", "ssh://-oProxyCommand=touch%20x@127.0.0.1/r.git")
    assert res.returncode == 125
    assert b"-oProxyCommand=touch%20x@127.0.0.1" in res.stderr, res.stderr
