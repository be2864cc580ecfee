"""The key table (spec/keys.py) as the one declaration of every spec key, the origin of every
effective value, and the spec defects of the redesign issue, each with the input that used to
break it."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from tests.helpers import Env, torchjob, write
from torchrun_cli.spec.keys import KEYS, with_flags
from torchrun_cli.spec.model import (
    BackendSpec,
    DistributedSpec,
    JobSpec,
    MetricsSpec,
    OutputsSpec,
    PythonSpec,
    RetentionSpec,
    RetrySpec,
)


def fields(model: Any) -> set[str]:
    """A section's fields: a NamedTuple's, or the slots of RetrySpec (not a NamedTuple)."""
    return set(getattr(model, "_fields", None) or model.__slots__)


def test_every_key_is_a_field_of_the_model_and_every_flag_an_option_of_run() -> None:
    spec = JobSpec(name="n", project="/p", project_kind="local", script="s.py")
    masked = spec.masked()
    sections: dict[str, Any] = {
        "python": PythonSpec,
        "outputs": OutputsSpec,
        "distributed": DistributedSpec,
        "backend": BackendSpec,
        "retries": RetrySpec,
        "metrics": MetricsSpec,
        "retention": RetentionSpec,
    }
    assert {k.section for k in KEYS} - {""} == set(sections)  # a new section is checked too
    for key in KEYS:
        top = key.path.split(".")[0]
        assert top in JobSpec._fields, key.path
        assert top in masked, key.path  # run.json's spec shows every key
        if key.section:
            assert key.name in fields(sections[key.section]), key.path
    for name, model in sections.items():  # and no field of a section without its key
        assert {f"{name}.{f}" for f in fields(model)} <= {k.path for k in KEYS}, name
    helptext = torchjob("run", "--help", env={**os.environ, "COLUMNS": "200"}).stdout.decode()
    for key in with_flags():
        for flag in key.flags:
            assert flag in helptext, flag


def test_a_spec_with_inputs_keeps_its_name(project: Path, iso: Env) -> None:
    """The channel loop used to reuse the variable holding the name: the run was named after
    the last channel, `runs --name` missed it and `resume_from: last` took another job's."""
    write(project / "main.py", "import os\nprint(os.environ['TORCHJOB_CHANNEL_TRAIN'])\n")
    (project / "data").mkdir()
    spec = write(project / "job.yaml", "name: mine\nscript: main.py\ninputs: {train: data}\n")
    for extra in ([], ["--input", f"extra={project / 'data'}"]):
        res = torchjob("run", "-q", str(spec), *extra)
        assert res.returncode == 0, res.stderr
    rows = json.loads(torchjob("runs", "--json", "--name", "mine").stdout)
    assert [r["name"] for r in rows] == ["mine", "mine"]
    assert rows[0]["spec"]["inputs"] == {
        "train": str(project / "data"),
        "extra": str(project / "data"),
    }


def test_null_means_no_limit_and_other_types_are_exit_2(project: Path, iso: Env) -> None:
    write(project / "a.py", "print('ran')\n")
    ok = write(project / "ok.yaml", "script: a.py\ntimeout: null\n")
    res = torchjob("run", str(ok))
    assert res.returncode == 0, res.stderr
    assert json.loads(torchjob("show", "last", "--json").stdout)["spec"]["timeout"] is None
    for text, line, key in (
        ("timeout: [1]", 2, "timeout"),
        ("grace: {a: 1}", 2, "grace"),
        ("timeout: true", 2, "timeout"),
    ):
        bad = write(project / "bad.yaml", f"script: a.py\n{text}\n")
        res = torchjob("run", str(bad))
        err = res.stderr.decode()
        assert res.returncode == 2, err
        assert f"{bad}:{line}: {key}: bad duration" in err and "internal error" not in err


def test_a_fifo_or_a_device_as_the_spec_is_refused_at_once(project: Path, iso: Env) -> None:
    fifo = project / "spec.yaml"
    os.mkfifo(fifo)
    for spec in (fifo, Path("/dev/zero")):
        res = torchjob("validate", str(spec), timeout=30)  # used to wait forever / fill memory
        assert res.returncode == 2, res.stderr
        assert b"not a regular file" in res.stderr and b"Traceback" not in res.stderr
    assert not iso.runs.exists()


def test_requirements_reads_are_bounded(project: Path, iso: Env) -> None:
    """`-r /dev/zero` in requirements used to end in MemoryError; a FIFO include blocked."""
    write(project / "a.py", "print('ran')\n")
    os.mkfifo(project / "pipe.txt")
    for line, says in (
        ("-r /dev/zero", b"not a regular file"),
        ("-r pipe.txt", b"not a regular file"),
        ("-c pipe.txt", b"not a regular file"),
        ("-r missing.txt", b"No such file"),
    ):  # a local path: exit 2, not 125
        write(project / "requirements.txt", line + "\n")
        res = torchjob(
            "run", "-s", "a.py", "-p", str(project), "--env-manager", "virtualenv", timeout=60
        )
        assert res.returncode == 2, res.stderr
        assert says in res.stderr and b"MemoryError" not in res.stderr
    assert not iso.runs.exists()


def test_requirements_that_name_a_folder_say_so(project: Path, iso: Env) -> None:
    write(project / "a.py", "print('ran')\n")
    (project / "reqs").mkdir()
    res = torchjob(
        "run",
        "-s",
        "a.py",
        "-p",
        str(project),
        "--env-manager",
        "virtualenv",
        "--requirements",
        "reqs",
    )
    assert res.returncode == 2
    assert b"is a folder, not a file" in res.stderr


def test_resume_last_is_valid_without_earlier_runs(project: Path, iso: Env) -> None:
    """validate used to crash (NotADirectoryError) and --dry-run refused the valid spec."""
    write(project / "a.py", "print('ran')\n")
    spec = write(project / "job.yaml", "script: a.py\nresume_from: last\n")
    res = torchjob("validate", str(spec))
    assert res.returncode == 0, res.stderr
    res = torchjob("run", str(spec), "--dry-run")
    assert res.returncode == 0, res.stderr
    assert b"a run would exit 2" in res.stdout
    res = torchjob("run", str(spec))  # the run itself still refuses: nothing to resume
    assert res.returncode == 2 and b"no earlier run named 'a'" in res.stderr


def test_dry_run_shows_where_each_value_came_from(project: Path, iso: Env) -> None:
    write(project / "a.py", "print('ran')\n")
    spec = write(project / "job.yaml", "name: fromfile\nscript: a.py\nparams:\n  lr: 0.1\n")
    env = {**os.environ, "PYTHON_LAUNCHER": sys.executable, "TORCHJOB_GIT_TIMEOUT": "99"}
    res = torchjob("run", str(spec), "-P", "epochs=3", "--dry-run", env=env)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.decode().splitlines()

    def origin(text: str) -> str:
        (line,) = [x for x in lines if x.split()[-2:-1] == [text] or f" {text}  [" in x]
        return line.rsplit("[", 1)[1].rstrip("]")

    assert origin("name=fromfile") == f"{spec}:1"
    assert origin("params.lr=0.1") == f"{spec}:4"
    assert origin("params.epochs=3") == "flag --param"
    assert origin("python.manager=none") == "default"
    assert origin(f"python.interpreter={sys.executable}") == "$PYTHON_LAUNCHER"
    assert origin("git_timeout=99s") == "$TORCHJOB_GIT_TIMEOUT"
    assert origin("build_timeout=3600s") == "default"


def test_a_bad_setting_stops_every_command_before_it_runs(project: Path, iso: Env) -> None:
    write(project / "a.py", "open('ran', 'w')\n")
    env = {**os.environ, "TORCHJOB_BUILD_TIMEOUT": "soon", "TORCHJOB_ARCHIVE_MAX_BYTES": "1.5"}
    for args in (["run", "-s", "a.py", "-p", str(project)], ["runs"], ["env", "list"]):
        res = torchjob(*args, env=env)
        assert res.returncode == 2, (args, res.stderr)
        err = res.stderr.decode().splitlines()
        assert err[0].startswith("torchjob: error: TORCHJOB_BUILD_TIMEOUT='soon'")
        assert err[1].startswith("torchjob: error: TORCHJOB_ARCHIVE_MAX_BYTES='1.5'")
    assert not (project / "ran").exists()
