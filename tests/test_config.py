"""Config files: the user's config.toml (XDG, or $TORCHJOB_CONFIG) and the project's
[tool.torchjob] table, with precedence default < user config < project config < environment <
spec < flag; each value's origin in `torchjob config` and --dry-run; a bad file is exit 2 with
file:line before anything runs. Real files in the test's own HOME and XDG folders (conftest's
`iso` fixture points them into the test's temporary folder)."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import platformdirs
import pytest

from tests.helpers import Env, torchjob, write
from torchrun_cli import settings
from torchrun_cli.errors import SettingsError


def user_config(text: str) -> Path:
    """The user config file where XDG puts it for this test."""
    return write(Path(os.environ["XDG_CONFIG_HOME"]) / "torchjob" / "config.toml", text)


def config_json(cwd: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    res = torchjob("config", "--json", cwd=cwd, env=env)
    assert res.returncode == 0, res.stderr
    data: dict[str, Any] = json.loads(res.stdout)
    return data


def value(data: dict[str, Any], name: str) -> tuple[Any, str]:
    entry = data["values"][name]
    return entry["value"], entry["origin"]


def dry_run(cwd: Path, *args: str, env: dict[str, str] | None = None) -> dict[str, str]:
    """The origins of --dry-run's rows, by label (`grace`) and by value (`tty=never`)."""
    res = torchjob("run", *args, "--dry-run", cwd=cwd, env=env)
    assert res.returncode == 0, res.stderr
    rows: dict[str, str] = {}
    for line in res.stdout.decode().splitlines():
        left, _, origin = line.rpartition("  [")
        if not left:
            continue
        label, text = left[:13].strip().rstrip(":"), left[14:].strip()
        for name in (label, text):
            if name:
                rows[name] = origin.removesuffix("]")
    return rows


def test_no_config_file_means_the_defaults(tmp_path: Path, iso: Env) -> None:
    data = config_json(tmp_path)
    assert data["schema_version"] == 1
    user = Path(os.environ["XDG_CONFIG_HOME"]) / "torchjob" / "config.toml"
    assert data["files"][0] == {"role": "user", "path": str(user), "state": "not found"}
    assert data["files"][-1]["role"] == "project" and data["files"][-1]["state"].startswith("no ")
    assert value(data, "git_timeout") == (600.0, "default")
    assert value(data, "quiet") == (False, "default")
    assert value(data, "grace") == (10.0, "default (45 s for a torchrun job)")
    assert value(data, "env_manager") == ("none", "default")
    assert value(data, "tty") == ("auto", "default")
    python, origin = value(data, "python")
    assert os.path.realpath(python) == os.path.realpath(sys.executable)
    assert origin == "default (torchjob's own interpreter)"
    assert value(data, "home") == (str(iso.home), "$TORCHJOB_HOME")
    assert value(data, "runs_dir") == (str(iso.runs), "$TORCHJOB_HOME (runs/ in home)")
    text = torchjob("config", cwd=tmp_path)
    assert text.returncode == 0 and b"git_timeout=600s  [default]" in text.stdout


def test_precedence_at_each_level(tmp_path: Path, iso: Env) -> None:
    """grace: default < user config < project config < spec < flag; git_timeout: user config <
    project config < environment; python: config < $PYTHON_LAUNCHER < spec < flag."""
    proj = tmp_path / "proj"
    write(proj / "a.py", "print('ran')\n")
    spec = write(proj / "job.yaml", "script: a.py\n")
    assert dry_run(proj, str(spec))["grace"] == "default"
    cfg = user_config('# mine\ngrace = "30s"\ngit_timeout = 100\npython = "bin/py"\n')
    rows = dry_run(proj, str(spec))
    assert rows["grace=30.0"] == f"config {cfg}:2"
    assert rows["python.interpreter=" + str(cfg.parent / "bin/py")] == f"config {cfg}:4"
    pyproject = write(
        proj / "pyproject.toml",
        '[project]\nname = "p"\n\n[tool.torchjob]\ngrace = "20s"\ngit_timeout = "200s"\n',
    )
    rows = dry_run(proj, str(spec))
    assert rows["grace=20.0"] == f"config {pyproject}:5"
    assert rows["git_timeout=200s"] == f"config {pyproject}:6"
    env = {**os.environ, "TORCHJOB_GIT_TIMEOUT": "5m", "PYTHON_LAUNCHER": sys.executable}
    rows = dry_run(proj, str(spec), env=env)
    assert rows["git_timeout=300s"] == "$TORCHJOB_GIT_TIMEOUT"
    assert rows[f"python.interpreter={sys.executable}"] == "$PYTHON_LAUNCHER"
    write(spec, "script: a.py\ngrace: 15s\npython:\n  interpreter: /usr/bin/python3\n")
    rows = dry_run(proj, str(spec), env=env)
    assert rows["grace=15.0"] == f"{spec}:2"
    assert rows["python.interpreter=/usr/bin/python3"] == f"{spec}:4"
    rows = dry_run(proj, str(spec), "--grace", "12s", "--python", sys.executable, env=env)
    assert rows["grace=12.0"] == "flag --grace"
    assert rows[f"python.interpreter={sys.executable}"] == "flag --python"
    data = config_json(proj, env)  # the same origins in `torchjob config`
    assert value(data, "grace") == (20.0, f"config {pyproject}:5")
    assert value(data, "git_timeout") == (300.0, "$TORCHJOB_GIT_TIMEOUT")
    assert value(data, "python") == (sys.executable, "$PYTHON_LAUNCHER")
    assert [f["state"] for f in data["files"]] == ["read", "read tool.torchjob"]


def test_spec_defaults_from_config_show_in_dry_run_and_reach_the_run(
    tmp_path: Path, iso: Env
) -> None:
    proj = tmp_path / "proj"
    write(proj / "a.py", "print('ran')\n")
    cfg = user_config('env_manager = "none"\ntty = "never"\n')
    rows = dry_run(proj, "-s", "a.py")
    assert rows["tty=never"] == f"config {cfg}:2"
    assert rows["environment"] == f"config {cfg}:1"
    res = torchjob("run", "-s", "a.py", cwd=proj)
    assert res.returncode == 0, res.stderr
    assert res.stdout == b"ran\n"
    rec = json.loads(next(iso.runs.glob("*/run.json")).read_text())
    assert rec["spec"]["tty"] == "never" and rec["spec"]["python"]["manager"] == "none"


def test_a_short_config_grace_does_not_cut_torchrun_short(tmp_path: Path, iso: Env) -> None:
    proj = tmp_path / "proj"
    write(proj / "a.py", "print(1)\n")
    spec = write(proj / "job.yaml", "script: a.py\ndistributed: {nproc_per_node: 1}\n")
    user_config('grace = "5s"\n')
    rows = dry_run(proj, str(spec))
    assert rows["grace=45.0"].startswith("default (torchrun's 30 s") and "5s" in rows["grace"]
    user_config('grace = "90s"\n')
    assert "grace=90.0" in dry_run(proj, str(spec))


def test_quiet_in_config_and_no_quiet_flag(tmp_path: Path, iso: Env) -> None:
    """cron users put `quiet = true` in the config; --no-quiet gives the output back."""
    proj = tmp_path / "proj"
    write(proj / "ok.py", "print('hello')\n")
    write(proj / "bad.py", "print('partial')\nraise SystemExit(3)\n")
    user_config("quiet = true\n")
    res = torchjob("run", "-s", "ok.py", "-p", str(proj))
    assert (res.returncode, res.stdout, res.stderr) == (0, b"", b"")
    res = torchjob("run", "-s", "bad.py", "-p", str(proj))
    assert res.returncode == 3 and b"partial" in res.stderr and b"failed" in res.stderr
    res = torchjob("run", "-s", "ok.py", "-p", str(proj), "--no-quiet")
    assert res.returncode == 0 and res.stdout == b"hello\n" and b"succeeded" in res.stderr
    user_config("quiet = false\n")
    res = torchjob("run", "-q", "-s", "ok.py", "-p", str(proj))
    assert (res.returncode, res.stdout, res.stderr) == (0, b"", b"")


def test_runs_dir_and_home_are_relative_to_their_file(
    tmp_path: Path, iso: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    proj = tmp_path / "proj"
    write(proj / "a.py", "print('ran')\n")
    write(proj / "pyproject.toml", '[tool.torchjob]\nruns_dir = "myruns"\n')
    (proj / "sub").mkdir()
    res = torchjob("run", "-s", "a.py", "-p", "..", cwd=proj / "sub")
    assert res.returncode == 0, res.stderr
    assert len(list((proj / "myruns").glob("*/run.json"))) == 1
    assert not iso.runs.exists()  # the config's runs_dir wins over $TORCHJOB_HOME/runs
    res = torchjob("run", "-s", "a.py", "--runs-dir", str(tmp_path / "flag"), cwd=proj)
    assert res.returncode == 0, res.stderr
    assert len(list((tmp_path / "flag").glob("*/run.json"))) == 1  # and --runs-dir over both
    (proj / "pyproject.toml").unlink()
    monkeypatch.delenv("TORCHJOB_HOME")
    cfg = user_config('home = "tj"\n')
    data = config_json(proj)
    assert value(data, "home") == (str(cfg.parent / "tj"), f"config {cfg}:1")
    assert value(data, "runs_dir")[0] == str(cfg.parent / "tj" / "runs")
    res = torchjob("run", "-s", "a.py", cwd=proj)
    assert res.returncode == 0, res.stderr
    assert len(list((cfg.parent / "tj" / "runs").glob("*/run.json"))) == 1


def test_a_bad_config_file_is_exit_2_with_file_line_and_nothing_runs(
    tmp_path: Path, iso: Env
) -> None:
    proj = tmp_path / "proj"
    write(proj / "a.py", "open('ran', 'w')\n")
    cfg = user_config(
        '# user\nquiet = "yes"\nenv_manger = "uv"\ngrace = "5 parsecs"\ntty = "sometimes"\n'
        "archive_max_bytes = 1.5\n"
    )
    pyproject = write(
        proj / "pyproject.toml", '[project]\nname = "p"\n[tool.torchjob]\nrun_dir = 1\n'
    )
    env = {**os.environ, "TORCHJOB_BUILD_TIMEOUT": "soon"}
    for args in (["run", "-s", "a.py"], ["config"], ["runs"]):
        res = torchjob(*args, cwd=proj, env=env)
        assert res.returncode == 2, (args, res.stderr)
        assert res.stdout == b""
        assert res.stderr.decode().splitlines() == [
            f"torchjob: error: {cfg}:2: quiet: expected true or false, got a string; "
            "fix: write quiet = true or quiet = false",
            f"torchjob: error: {cfg}:3: env_manger: unknown key; fix: did you mean `env_manager`?",
            f"torchjob: error: {cfg}:4: grace: bad duration '5 parsecs' (not a duration); "
            'fix: write e.g. grace = "30s" (90s, 15m, 2h)',
            f"torchjob: error: {cfg}:5: tty: unknown value 'sometimes'; "
            "fix: use one of auto, always, never",
            f"torchjob: error: {cfg}:6: archive_max_bytes: expected a positive whole number, "
            "got 1.5; fix: write a whole number, e.g. archive_max_bytes = 8_000_000_000",
            f"torchjob: error: {pyproject}:4: tool.torchjob.run_dir: unknown key; "
            "fix: did you mean `runs_dir`?",
            "torchjob: error: TORCHJOB_BUILD_TIMEOUT='soon' is not seconds or a duration "
            "(90s, 15m, 2h) (seconds one environment build step may take); "
            "fix: unset TORCHJOB_BUILD_TIMEOUT or correct it",
        ]
    assert not (proj / "ran").exists() and not iso.runs.exists()


def test_a_toml_syntax_error_names_its_line(tmp_path: Path, iso: Env) -> None:
    proj = tmp_path / "proj"
    write(proj / "a.py", "open('ran', 'w')\n")
    cfg = user_config("quiet = true\ngrace = 5s\n")  # an unquoted duration
    res = torchjob("run", "-s", "a.py", cwd=proj)
    assert res.returncode == 2
    err = res.stderr.decode()
    assert err.startswith(f"torchjob: error: {cfg}:2: grace: TOML syntax error: "), err
    assert "Traceback" not in err and err.count("\n") == 1
    assert not (proj / "ran").exists() and not iso.runs.exists()
    pyproject = write(proj / "pyproject.toml", "[tool.torchjob]\nquiet = true\n[broken\n")
    user_config("")
    res = torchjob("validate", "x.yaml", cwd=proj)
    assert res.returncode == 2
    assert res.stderr.decode().startswith(f"torchjob: error: {pyproject}:3: (toml): TOML syntax")


def test_the_nearest_pyproject_with_the_table_is_found_from_a_subfolder(
    tmp_path: Path, iso: Env
) -> None:
    """pyproject.toml files without [tool.torchjob] are passed over (as uv and ruff do);
    the search goes up to the root."""
    root = tmp_path / "repo"
    top = write(
        root / "pyproject.toml", '[project]\nname = "r"\n\n[tool.torchjob]\ntty = "never"\n'
    )
    member = write(root / "pkg" / "pyproject.toml", '[project.scripts]\ntorchjob = "x:y"\n')
    plain = write(root / "pkg" / "src" / "pyproject.toml", '[project]\nname = "plain"\n')
    deep = root / "pkg" / "src" / "deep"
    deep.mkdir()
    data = config_json(deep)
    assert value(data, "tty") == ("never", f"config {top}:5")
    assert data["files"][1:] == [
        {"role": "project", "path": str(plain), "state": "no [tool.torchjob] table"},
        {"role": "project", "path": str(member), "state": "no [tool.torchjob] table"},
        {"role": "project", "path": str(top), "state": "read tool.torchjob"},
    ]
    write(member, '[project]\nname = "m"\n[tool.torchjob]\ntty = "always"\n')
    assert value(config_json(deep), "tty") == ("always", f"config {member}:4")  # nearest wins


def test_torchjob_config_names_the_user_file_or_none(tmp_path: Path, iso: Env) -> None:
    user_config("this is not TOML\n")  # never read below
    other = write(tmp_path / "other.toml", "\n\nquiet = true\n")
    data = config_json(tmp_path, {**os.environ, "TORCHJOB_CONFIG": str(other)})
    assert value(data, "quiet") == (True, f"config {other}:3")
    assert data["files"][0] == {"role": "user", "path": str(other), "state": "read"}
    for off in ("", os.devnull):
        data = config_json(tmp_path, {**os.environ, "TORCHJOB_CONFIG": off})
        assert value(data, "quiet") == (False, "default")
        assert data["files"][0]["state"] == "turned off by TORCHJOB_CONFIG"
    missing = tmp_path / "missing.toml"
    res = torchjob("config", env={**os.environ, "TORCHJOB_CONFIG": str(missing)}, cwd=tmp_path)
    assert res.returncode == 2
    assert res.stderr.decode().startswith(f"torchjob: error: {missing}: TORCHJOB_CONFIG: ")
    res = torchjob("config", env={**os.environ, "TORCHJOB_CONFIG": ""}, cwd=tmp_path)
    assert b"turned off by TORCHJOB_CONFIG" in res.stdout


def test_other_ways_to_write_the_table(tmp_path: Path) -> None:
    """In-process: dotted keys, an inline table, quoted names; and each key's line."""
    env = {"TORCHJOB_CONFIG": ""}
    cases: dict[str, dict[str, int]] = {
        '[tool]\ntorchjob.quiet = true\ntorchjob.tty = "never"\n': {"quiet": 2, "tty": 3},
        '[tool]\ntorchjob = { quiet = true, tty = "never" }\n': {"quiet": 2, "tty": 2},
        '[ "tool" . "torchjob" ]\n"quiet" = true\n\ntty = "never"\n': {"quiet": 2, "tty": 4},
    }
    for i, (text, lines) in enumerate(cases.items()):
        folder = tmp_path / str(i)
        pyproject = write(folder / "pyproject.toml", text)
        found = settings.read(env, folder)
        assert (found.quiet, found.tty) == (True, "never"), text
        assert found.origins["quiet"] == f"config {pyproject}:{lines['quiet']}", text
        assert found.origins["tty"] == f"config {pyproject}:{lines['tty']}", text


def test_the_limits_take_durations_in_the_environment_too(tmp_path: Path) -> None:
    found = settings.read({"TORCHJOB_CONFIG": "", "TORCHJOB_GIT_TIMEOUT": "10m"}, tmp_path)
    assert (found.git_timeout, found.origins["git_timeout"]) == (600.0, "$TORCHJOB_GIT_TIMEOUT")


def test_a_table_that_is_no_table(tmp_path: Path) -> None:
    pyproject = write(tmp_path / "pyproject.toml", '[project]\nname = "p"\n[tool]\ntorchjob = 3\n')
    with pytest.raises(SettingsError) as caught:
        settings.read({"TORCHJOB_CONFIG": ""}, tmp_path)
    assert caught.value.lines() == [
        f"{pyproject}:4: tool.torchjob: expected a table, got a number; "
        "fix: write a [tool.torchjob] table of `key = value` lines"
    ]


def test_the_readme_example_is_a_valid_config(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    (example,) = re.findall(r"```toml\n(.*?)```", readme, re.S)
    cfg = write(tmp_path / "config.toml", example)
    found = settings.read({"TORCHJOB_CONFIG": str(cfg)}, tmp_path)
    assert found.env_manager == "uv" and found.quiet is True
    assert found.runs_path == str(Path("~/runs").expanduser())
    assert {o for o in found.origins.values() if o.startswith("config ")} >= {
        f"config {cfg}:{n}" for n in range(2, 7)
    }


@pytest.mark.parametrize("value", [None, "", "   ", "/srv/xdg", " /srv/x ", "relative/x"])
def test_the_xdg_folders_are_platformdirs_own(value: str | None, monkeypatch: Any) -> None:
    """On Linux torchjob finds its data and cache folders without importing platformdirs (7 ms
    of each start): the same folders platformdirs gives, XDG variable absolute, relative,
    blank or unset."""
    for variable, default, theirs in (
        ("XDG_DATA_HOME", "~/.local/share", platformdirs.user_data_path),
        ("XDG_CACHE_HOME", "~/.cache", platformdirs.user_cache_path),
    ):
        if value is None:
            monkeypatch.delenv(variable, raising=False)
        else:
            monkeypatch.setenv(variable, value)
        assert settings.xdg_path(variable, default) == theirs("torchjob", appauthor=False)
