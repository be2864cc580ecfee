"""The environment key covers the installers' own configuration that changes what gets
installed: pip's and uv's constraint and index variables, their config files and the constraint
files those name. Real pip and uv, offline from the test wheelhouse."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import Env, newest_record, torchjob, write

SHOW = "import tinya\nprint(tinya.VALUE)\n"


def _run(project: Path, iso: Env, manager: str, env: dict[str, str]) -> tuple[bytes, str]:
    res = torchjob("run", "-s", "main.py", "-p", str(project), "--env-manager", manager, env=env)
    assert res.returncode == 0, res.stderr
    return res.stdout, newest_record(iso.runs)["environment"]["key"]


@pytest.mark.parametrize(
    ("manager", "variable"), [("virtualenv", "PIP_CONSTRAINT"), ("uv", "UV_CONSTRAINT")]
)
def test_a_constraint_changes_the_environment(
    project: Path, iso: Env, offline: Any, manager: str, variable: str
) -> None:
    """A changed constraint used to reuse the old environment, installed without it."""
    write(project / "main.py", SHOW)
    write(project / "requirements.txt", "tinya\n")
    out, free = _run(project, iso, manager, offline)
    assert out == b"tinya 2.0\n"
    pins = write(iso.tmp / "pins.txt", "tinya==1.0\n")
    out, pinned = _run(project, iso, manager, {**offline, variable: str(pins)})
    assert out == b"tinya 1.0\n" and pinned != free
    write(pins, "tinya==2.0\n")  # the same variable, another content: another environment
    out, repinned = _run(project, iso, manager, {**offline, variable: str(pins)})
    assert out == b"tinya 2.0\n" and repinned not in (free, pinned)


def test_a_pip_config_file_and_the_constraint_it_names_are_keyed(
    project: Path, iso: Env, offline: Any
) -> None:
    write(project / "main.py", SHOW)
    write(project / "requirements.txt", "tinya\n")
    pins = write(iso.tmp / "pins.txt", "tinya==1.0\n")
    conf = write(iso.tmp / "pip.conf", f"[install]\nconstraint = {pins}\n")
    env = {**offline, "PIP_CONFIG_FILE": str(conf)}
    out, first = _run(project, iso, "virtualenv", env)
    assert out == b"tinya 1.0\n"
    write(pins, "tinya==2.0\n")
    out, second = _run(project, iso, "virtualenv", env)
    assert out == b"tinya 2.0\n" and second != first


def test_index_credentials_stay_out_of_the_key(project: Path, iso: Env, offline: Any) -> None:
    """An index URL with a password is keyed without it: another password installs the same
    packages, and nothing on disk shows it. (PIP_NO_INDEX keeps pip off the index.)"""
    write(project / "main.py", SHOW)
    write(project / "requirements.txt", "tinya==1.0\n")
    keys = []
    for secret in ("s3cretpass1", "s3cretpass2"):
        env = {**offline, "PIP_EXTRA_INDEX_URL": f"https://bob:{secret}@pypi.example/simple"}
        keys.append(_run(project, iso, "virtualenv", env)[1])
    assert keys[0] == keys[1]
    listed = torchjob("env", "list", "--json").stdout.decode()
    assert "s3cretpass" not in listed and "https://bob:****@pypi.example" in listed
    for marker in (iso.home / "cache" / "envs").glob("*/.ready"):
        assert "s3cretpass" not in marker.read_text()
    assert json.loads(listed)[0]["inputs"]["installer"]["variables"]["PIP_EXTRA_INDEX_URL"]
