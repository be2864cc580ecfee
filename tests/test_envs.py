"""Environments with real virtualenv, uv and pip, installing offline from a test wheelhouse."""

from __future__ import annotations

import base64
import json
import os
import random
import shutil
import signal
import subprocess
import sys
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import (
    TORCHJOB,
    Env,
    gone_within,
    newest_record,
    other_interpreter,
    run_records,
    setup_log,
    torchjob,
    wait_until,
    write,
)
from torchrun_cli.envs.builders import BuildRequest, _pip_args

MANAGERS = ["virtualenv", "uv"]
SHOW = "import sys, tinya\nprint(tinya.VALUE)\n"


def ready_envs(iso: Env) -> list[Path]:
    return sorted((iso.home / "cache" / "envs").glob("*/.ready"))


def build_started(envs: Path, proc: subprocess.Popen[bytes]) -> bool:
    """Whether the run's build has made its environment folder (the run must still be on)."""
    if list(envs.glob("*/env-*")):
        return True
    assert proc.poll() is None, "torchjob ended before its build was seen"
    return False


@pytest.mark.parametrize("manager", MANAGERS)
def test_build_once_then_reuse_without_any_tool(
    project: Path, iso: Env, offline: Any, manager: str
) -> None:
    write(project / "main.py", SHOW)
    write(project / "requirements.txt", "tinyb==1.0\n")  # pulls tinya 2.0 through its dependency
    res = torchjob("run", "-s", "main.py", "-p", str(project), "--env-manager", manager)
    assert res.returncode == 0, res.stderr
    assert res.stdout == b"tinya 2.0\n"
    first = newest_record(iso.runs)
    env = first["environment"]
    assert (env["manager"], env["reused"]) == (manager, False)
    assert env["build_seconds"] > 0 and env["python_version"] == ".".join(
        map(str, sys.version_info[:3])
    )
    assert first["interpreter"] == str(Path(env["path"]) / "bin" / "python")
    assert "install" in setup_log(iso.runs, first)
    res = torchjob("run", "-s", "main.py", "-p", str(project), "--env-manager", manager)
    assert res.returncode == 0 and res.stdout == b"tinya 2.0\n"
    second = newest_record(iso.runs)
    assert second["environment"]["reused"] is True
    assert second["environment"]["key"] == env["key"]
    assert setup_log(iso.runs, second) == ""  # no pip, no uv, no virtualenv ran: nothing logged


@pytest.mark.parametrize("manager", MANAGERS)
def test_inputs_change_the_key(project: Path, iso: Env, offline: Any, manager: str) -> None:
    write(project / "main.py", SHOW)
    write(project / "requirements.txt", "-r base.txt\n")
    write(project / "base.txt", "tinya==1.0\n")
    keys = []

    def run(*extra: str) -> bytes:
        res = torchjob("run", "-s", "main.py", "-p", str(project), "--env-manager", manager, *extra)
        assert res.returncode == 0, res.stderr
        keys.append(newest_record(iso.runs)["environment"]["key"])
        return res.stdout

    assert run() == b"tinya 1.0\n"
    write(project / "base.txt", "tinya==2.0\n")  # a change in an -r include
    assert run() == b"tinya 2.0\n"
    write(project / "requirements.txt", "-r base.txt\n# a comment\n")
    run()
    run("--pip", "tinyb")
    assert len(set(keys)) == 4
    out = torchjob(
        "run", "-s", "main.py", "-p", str(project), "--env-manager", manager, "--dry-run"
    ).stdout.decode()
    assert "hit" in out
    out = torchjob(
        "run",
        "-s",
        "main.py",
        "-p",
        str(project),
        "--env-manager",
        manager,
        "--dry-run",
        "--rebuild",
    ).stdout.decode()
    assert "built afresh (--rebuild)" in out and "hit" not in out
    write(project / "base.txt", "tinya==1.0\n")
    out = torchjob(
        "run", "-s", "main.py", "-p", str(project), "--env-manager", manager, "--dry-run"
    ).stdout.decode()
    assert "miss (" in out and "requirements" in out  # which input differs, and from what


def test_another_interpreter_is_another_environment(project: Path, iso: Env, offline: Any) -> None:
    other = other_interpreter()
    if other is None:
        pytest.skip("no second interpreter on this machine")
    write(project / "main.py", "import sys\nprint(sys.base_prefix)\n")
    keys = set()
    for python in (sys.executable, other):
        res = torchjob(
            "run", "-s", "main.py", "-p", str(project), "--env-manager", "uv", "--python", python
        )
        assert res.returncode == 0, res.stderr
        keys.add(newest_record(iso.runs)["environment"]["key"])
    assert len(keys) == 2


def test_rebuild_and_system_site_packages(project: Path, iso: Env, offline: Any) -> None:
    write(project / "main.py", "import yaml\nprint('yaml', yaml.__version__)\n")
    res = torchjob("run", "-s", "main.py", "-p", str(project), "--env-manager", "uv")
    assert res.returncode == 1 and b"No module named 'yaml'" in res.stderr  # isolated
    spec = write(
        project / "job.yaml",
        "script: main.py\npython:\n  manager: uv\n  system_site_packages: true\n",
    )
    base_has_yaml = (
        subprocess.run([sys.executable, "-c", "import yaml"], check=False).returncode == 0
    )
    res = torchjob("run", str(spec))
    assert (res.returncode == 0) == base_has_yaml, res.stderr
    key = newest_record(iso.runs)["environment"]["key"]
    res = torchjob("run", str(spec), "--rebuild")
    rec = newest_record(iso.runs)
    assert rec["environment"]["key"] == key and rec["environment"]["reused"] is False


def test_eight_concurrent_runs_build_once(project: Path, iso: Env, offline: Any) -> None:
    write(project / "main.py", SHOW)
    write(project / "requirements.txt", "tinya==1.0\n")
    argv = [*TORCHJOB, "run", "-s", "main.py", "-p", str(project), "--env-manager", "virtualenv"]
    procs = [
        subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) for _ in range(8)
    ]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * 8
    assert outs == [b"tinya 1.0\n"] * 8
    recs = run_records(iso.runs)
    assert sum(not r["environment"]["reused"] for r in recs) == 1
    assert len(ready_envs(iso)) == 1


def test_kill_9_during_builds_then_clean_reruns(project: Path, iso: Env, offline: Any) -> None:
    write(project / "main.py", SHOW)
    write(project / "requirements.txt", "tinya==1.0\n")
    argv = [
        *TORCHJOB,
        "run",
        "-q",
        "-s",
        "main.py",
        "-p",
        str(project),
        "--env-manager",
        "virtualenv",
    ]
    envs = iso.home / "cache" / "envs"
    rng = random.Random(7)
    for _ in range(3):
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(partial(build_started, envs, proc), 60, "the build to start")
        try:  # then a random point of the build, which takes over a second more
            proc.wait(timeout=rng.uniform(0.0, 1.0))
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        for marker in ready_envs(iso):  # whatever is marked ready is really complete
            env = json.loads(marker.read_text())["env"]
            assert (marker.parent / env / "bin" / "python").exists()
        res = torchjob("run", "-s", "main.py", "-p", str(project), "--env-manager", "virtualenv")
        assert res.returncode == 0, res.stderr
        assert res.stdout == b"tinya 1.0\n"
        shutil.rmtree(envs)


@pytest.mark.parametrize(
    ("requirements", "needle"),
    [
        ("nosuchpackage==1.0\n", "No matching distribution"),
        ("tinya==1.0\ntinyb==1.0\n", "conflict"),
        ("tinybroken==1.0\n", "fails on purpose"),
        ("this is not a requirement !!\n", "Invalid requirement"),
    ],
)
def test_failed_builds_exit_125_and_leave_nothing(
    project: Path, iso: Env, offline: Any, requirements: str, needle: str
) -> None:
    write(project / "main.py", SHOW)
    write(project / "requirements.txt", requirements)
    res = torchjob("run", "-s", "main.py", "-p", str(project), "--env-manager", "virtualenv")
    err = res.stderr.decode()
    assert res.returncode == 125, err
    assert needle.lower() in err.lower(), err
    assert "Traceback" not in err
    rec = newest_record(iso.runs)
    assert (rec["status"], rec["phase"]) == ("setup_error", "environment")
    assert ready_envs(iso) == []
    assert not [p for p in (iso.home / "cache" / "envs").glob("*") if p.is_dir()]


def test_prune_never_removes_an_environment_in_use(project: Path, iso: Env, offline: Any) -> None:
    write(project / "main.py", "import sys\nprint('up', flush=True)\nsys.stdin.read()\n")
    job = subprocess.Popen(
        [*TORCHJOB, "run", "-s", "main.py", "-p", str(project), "--env-manager", "uv"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert job.stdin is not None and job.stdout is not None
    assert job.stdout.readline() == b"up\n"
    out = torchjob("env", "prune", "--keep", "0").stdout.decode()
    assert "kept (in use)" in out
    assert len(ready_envs(iso)) == 1
    key = json.loads(torchjob("env", "list", "--json").stdout)[0]["key"]
    assert torchjob("env", "rm", key[:10]).returncode == 2
    job.stdin.close()
    assert job.wait(timeout=60) == 0
    out = torchjob("env", "prune", "--keep", "0").stdout.decode()
    assert out.startswith("removed")
    assert ready_envs(iso) == []


def test_rebuild_while_a_job_runs_neither_waits_for_it_nor_pulls_its_env(
    project: Path, iso: Env, offline: Any
) -> None:
    """--rebuild builds beside the environment a running job uses: it does not wait for that
    job (hours, for training), and the job's environment stays until prune finds it unused."""
    write(project / "main.py", "import sys\nprint(sys.prefix, flush=True)\nsys.stdin.read()\n")
    write(project / "requirements.txt", "tinyb==1.0\n")
    job = subprocess.Popen(
        [*TORCHJOB, "run", "-s", "main.py", "-p", str(project), "--env-manager", "uv"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert job.stdin is not None and job.stdout is not None
    old_env = Path(job.stdout.readline().decode().strip())
    try:
        write(project / "quick.py", "import sys\nprint(sys.prefix)\n")
        res = torchjob(
            "run",
            "-s",
            "quick.py",
            "-p",
            str(project),
            "--env-manager",
            "uv",
            "--rebuild",
            timeout=120,
        )
        assert res.returncode == 0, res.stderr
        new_env = Path(res.stdout.decode().strip())
        assert new_env != old_env and new_env.parent == old_env.parent
        assert (old_env / "bin" / "python").exists()  # still there for the running job
        pruned = torchjob("env", "prune", "--unused-for", "300d")
        assert pruned.returncode == 0 and pruned.stdout == b""  # nothing old: nothing removed
        assert old_env.exists()  # and the tidy-up waits for the job's lease to go
    finally:
        job.stdin.close()
    assert job.wait(timeout=60) == 0
    assert torchjob("env", "prune", "--unused-for", "300d").returncode == 0
    assert not old_env.exists() and (new_env / "bin" / "python").exists()
    assert torchjob(
        "run", "-s", "quick.py", "-p", str(project), "--env-manager", "uv"
    ).stdout.decode().strip() == str(new_env)


def test_prune_keep_counts_ready_environments_only(project: Path, iso: Env, offline: Any) -> None:
    write(project / "main.py", SHOW)
    for requirement in ("tinya==1.0", "tinya==2.0"):
        write(project / "requirements.txt", requirement + "\n")
        assert (
            torchjob("run", "-s", "main.py", "-p", str(project), "--env-manager", "uv").returncode
            == 0
        )
    write(iso.home / "cache" / "envs" / ("f" * 24) / "env-1-abc" / "half", "built")  # newest
    out = torchjob("env", "prune", "--keep", "1").stdout.decode()
    assert sum(x.startswith("removed ") for x in out.splitlines()) == 2, out
    assert len(ready_envs(iso)) == 1
    assert not (iso.home / "cache" / "envs" / ("f" * 24)).exists()


def test_a_launcher_script_is_keyed_by_the_python_it_runs(
    project: Path, iso: Env, offline: Any
) -> None:
    """A pyenv shim picks its python from the folder or the environment; the same script
    must never reuse an environment built for another python."""
    other = other_interpreter()
    if other is None:
        pytest.skip("needs a second Python interpreter (Debian's /usr/bin/python3)")
    launcher = write(iso.tmp / "bin" / "python", '#!/bin/sh\nexec "$TJ_PICK" "$@"\n')
    launcher.chmod(0o755)
    write(project / "main.py", "import sys\nprint(sys.base_prefix)\n")
    prefixes = []
    for pick in (sys.executable, other, sys.executable):
        res = torchjob(
            "run",
            "-s",
            "main.py",
            "-p",
            str(project),
            "--python",
            str(launcher),
            "--env-manager",
            "uv",
            env={**os.environ, "TJ_PICK": pick},
        )
        assert res.returncode == 0, res.stderr
        reused = newest_record(iso.runs)["environment"]["reused"]
        prefixes.append((res.stdout.decode().strip(), reused))
    assert prefixes[0][0] != prefixes[1][0]
    assert [reused for _, reused in prefixes] == [False, False, True]
    assert prefixes[2][0] == prefixes[0][0]


def test_requirements_paths_are_the_project_s_and_includes_are_keyed(
    project: Path, iso: Env, offline: dict[str, str], tmp_path: Path
) -> None:
    """`./wheels/x.whl` means the project's folder, wherever torchjob is started from; an
    include written `-rbase.txt` or continued over two lines is part of the key."""
    wheel = next(Path(offline["PIP_FIND_LINKS"]).glob("tinya-1.0-*.whl"))
    shutil.copy(wheel, write(project / "wheels" / "x", "").parent / wheel.name)
    write(project / "main.py", SHOW)
    write(project / "base.txt", f"./wheels/{wheel.name}\n")
    write(project / "requirements.txt", "-r base.txt\n-c limits.txt\n")
    write(project / "limits.txt", "tinya<3\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    res = torchjob("run", "-s", "main.py", "-p", str(project), "--env-manager", "uv", cwd=elsewhere)
    assert res.returncode == 0, res.stderr
    assert res.stdout == b"tinya 1.0\n"
    # pip's (not uv's) other spellings: an attached value, a continued line
    write(project / "requirements.txt", "-rbase.txt\n-c \\\n  limits.txt\n")
    keys = []
    for name, text in (
        ("limits.txt", "tinya<3\n"),
        ("base.txt", f"wheels/{wheel.name}\n"),
        ("limits.txt", "tinya<4\n"),
        ("limits.txt", "tinya<4\n"),
    ):
        write(project / name, text)
        plan = torchjob(
            "run",
            "-s",
            "main.py",
            "-p",
            str(project),
            "--env-manager",
            "uv",
            "--dry-run",
            cwd=elsewhere,
        )
        assert plan.returncode == 0, plan.stderr
        keys.append(
            next(line for line in plan.stdout.decode().splitlines() if "key " in line)
            .split("key ")[1]
            .split(":")[0]
        )
    assert len(set(keys[:3])) == 3 and keys[3] == keys[2]  # each include is keyed


def test_a_python_version_the_interpreter_does_not_have_is_refused_before_building(
    project: Path, iso: Env, offline: Any
) -> None:
    write(project / "main.py", SHOW)
    res = torchjob(
        "run", "-s", "main.py", "-p", str(project), "--env-manager", "uv", "--python-version", "3.9"
    )
    assert res.returncode == 125, res.stderr
    assert b"python.version is 3.9" in res.stderr and b"Traceback" not in res.stderr
    # no uv, no pip: refused before any build
    assert setup_log(iso.runs, newest_record(iso.runs)) == ""


def test_missing_conda_is_a_clear_setup_error(project: Path, iso: Env) -> None:
    write(project / "main.py", SHOW)
    env = {**os.environ, "PATH": "/usr/bin:/bin"}
    env.pop("TORCHJOB_CONDA", None)
    res = torchjob(
        "run",
        "-s",
        "main.py",
        "-p",
        str(project),
        "--env-manager",
        "conda",
        "--python-version",
        "3.11",
        env=env,
    )
    assert res.returncode == 125 and b"no conda found" in res.stderr
    res = torchjob("run", "-s", "main.py", "-p", str(project), "--env-manager", "conda")
    assert res.returncode == 2 and b"conda needs a python version" in res.stderr


CONDA_STANDIN = r'''#!{python}
"""A stand-in for conda: no conda channel is reachable here. It records its arguments and
makes a virtualenv where `conda create -p ENV` would make a conda environment."""
import json, subprocess, sys
with open({log!r}, "a") as fh:
    fh.write(json.dumps(sys.argv[1:]) + "\n")
args = sys.argv[1:]
if args[0] == "create":
    prefix = args[args.index("--prefix") + 1]
    subprocess.run([sys.executable, "-m", "virtualenv", "--quiet", prefix], check=True)
'''


def test_conda_commands_with_a_stand_in(project: Path, iso: Env, offline: Any) -> None:
    """conda itself cannot run here (no channel is reachable): a stand-in `conda` on PATH
    records the exact commands torchjob issues, and makes a virtualenv for the rest."""
    log = iso.tmp / "conda-calls.jsonl"
    conda = write(
        iso.tmp / "bin" / "conda", CONDA_STANDIN.format(python=sys.executable, log=str(log))
    )
    conda.chmod(0o755)
    write(project / "main.py", SHOW)
    write(project / "requirements.txt", "tinya==1.0\n")
    write(project / "environment.yml", "dependencies:\n  - numpy\n")
    spec = write(
        project / "job.yaml",
        "script: main.py\npython:\n  manager: conda\n"
        '  version: "3.11"\n  conda_file: environment.yml\n'
        "  conda_packages: [numpy=1.26, scipy]\n",  # Azure ML's conda_packages
    )
    env = {**os.environ, "TORCHJOB_CONDA": str(conda)}
    res = torchjob("run", str(spec), env=env)
    assert res.returncode == 0, res.stderr
    assert res.stdout == b"tinya 1.0\n"
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    prefix = newest_record(iso.runs)["environment"]["path"]
    # what the health check measured, not the "3.11" asked for
    assert newest_record(iso.runs)["environment"]["python_version"] == ".".join(
        map(str, sys.version_info[:3])
    )
    assert calls == [
        ["create", "--yes", "--quiet", "--prefix", prefix, "python=3.11"],
        ["env", "update", "--prefix", prefix, "--file", str(project / "environment.yml")],
        ["install", "--yes", "--quiet", "--prefix", prefix, "numpy=1.26", "scipy"],
    ]
    key = newest_record(iso.runs)["environment"]["key"]
    assert "pip install" in setup_log(iso.runs, newest_record(iso.runs))
    assert torchjob("run", str(spec), env=env).returncode == 0
    assert len(log.read_text().splitlines()) == 3  # reused: conda not called again
    other = write(project / "other.yaml", spec.read_text().replace("scipy", "scipy=1.11"))
    assert torchjob("run", str(other), env=env).returncode == 0
    assert newest_record(iso.runs)["environment"]["key"] != key  # the packages are in the key
    pip = write(project / "pip.yaml", "script: main.py\npython: {conda_packages: [numpy]}\n")
    res = torchjob("run", str(pip), "--env-manager", "uv", env=env)
    assert res.returncode == 2 and b"conda packages need python.manager conda" in res.stderr


@pytest.mark.slow
@pytest.mark.parametrize("manager", MANAGERS)
def test_torch_cpu_wheel_installs_and_imports(project: Path, iso: Env, manager: str) -> None:
    """The real torch 2.13.0 CPU wheel from this machine's local wheel folder."""
    wheels = Path("/opt/wheels")
    if not list(wheels.glob("torch-2.13.0*.whl")):
        pytest.skip("no local torch 2.13.0 wheel")
    write(
        project / "main.py", "import torch\nprint(torch.__version__, torch.ones(2).sum().item())\n"
    )
    write(project / "requirements.txt", "torch==2.13.0\n")
    env = {**os.environ, "UV_FIND_LINKS": str(wheels), "PIP_FIND_LINKS": str(wheels)}
    res = torchjob(
        "run", "-s", "main.py", "-p", str(project), "--env-manager", manager, env=env, timeout=1200
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.decode().startswith("2.13.0") and res.stdout.strip().endswith(b"2.0")


def test_ctrl_c_during_a_build_stops_the_tools_and_leaves_no_marker(
    project: Path, iso: Env, offline: Any
) -> None:
    write(project / "main.py", SHOW)
    write(project / "requirements.txt", "tinya==1.0\n")
    proc = subprocess.Popen(
        [*TORCHJOB, "run", "-s", "main.py", "-p", str(project), "--env-manager", "virtualenv"],
        stderr=subprocess.DEVNULL,
    )
    envs = iso.home / "cache" / "envs"
    wait_until(partial(build_started, envs, proc), 60, "the build to start")
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130
    assert ready_envs(iso) == []
    assert not [p for p in envs.glob("*") if p.is_dir()]
    assert newest_record(iso.runs)["status"] == "cancelled"


def test_missing_uv_and_a_broken_interpreter_are_clear_setup_errors(
    project: Path, iso: Env
) -> None:
    """uv is installed here, so its absence is staged: PATH without it, and the `uv` module
    made unimportable inside the torchjob process. The broken interpreter is a real script."""
    write(project / "main.py", SHOW)
    code = (
        "import sys; sys.modules['uv'] = None; sys.argv[0] = 'torchjob'; "
        "from torchrun_cli.cli import main; main()"
    )
    env = {**os.environ, "PATH": "/usr/bin:/bin"}
    res = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            "run",
            "-s",
            "main.py",
            "-p",
            str(project),
            "--env-manager",
            "uv",
        ],
        capture_output=True,
        env=env,
        check=False,
    )
    assert res.returncode == 125 and b"uv is not installed" in res.stderr, res.stderr
    broken = write(iso.tmp / "bin" / "python-broken", "#!/bin/sh\nexit 3\n")
    broken.chmod(0o755)
    res = torchjob(
        "run",
        "-s",
        "main.py",
        "-p",
        str(project),
        "--env-manager",
        "virtualenv",
        "--python",
        str(broken),
    )
    assert res.returncode == 125 and b"cannot start the interpreter" in res.stderr


STALLING_CONDA = r'''#!{python}
"""A stand-in for a conda create that takes long (no conda channel is reachable here): it
starts a child of its own, as conda does, writes both pids, and waits."""
import os, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
with open({pids!r} + ".tmp", "w") as fh:
    fh.write(f"{{os.getpid()}} {{child.pid}}")
os.rename({pids!r} + ".tmp", {pids!r})
time.sleep(600)
'''


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_during_a_build_stops_the_tools_and_records_cancelled(
    project: Path, iso: Env, signum: int
) -> None:
    """`torchjob cancel` sends SIGTERM: during a build (a stand-in conda that stalls, since
    no real build can be held still), the tool and its child go, no marker, exit 128+N."""
    pids = iso.tmp / "conda.pids"
    conda = write(
        iso.tmp / "bin" / "conda", STALLING_CONDA.format(python=sys.executable, pids=str(pids))
    )
    conda.chmod(0o755)
    write(project / "main.py", SHOW)
    job = subprocess.Popen(
        [
            *TORCHJOB,
            "run",
            "-s",
            "main.py",
            "-p",
            str(project),
            "--env-manager",
            "conda",
            "--python-version",
            "3.11",
        ],
        env={**os.environ, "TORCHJOB_CONDA": str(conda)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )

    def stand_in_runs() -> bool:
        assert pids.exists() or job.poll() is None, "the stand-in never started"
        return pids.exists()

    wait_until(stand_in_runs, 60, "the stand-in conda to say it runs")
    tool_pids = [int(p) for p in pids.read_text().split()]
    job.send_signal(signum)
    assert job.wait(timeout=60) == 128 + signum
    assert gone_within(tool_pids, 30)
    rec = newest_record(iso.runs)
    assert (rec["status"], rec["exit_code"]) == ("cancelled", 128 + signum)
    assert ready_envs(iso) == []


@pytest.mark.parametrize("manager", MANAGERS)
def test_a_password_in_a_package_url_reaches_pip_and_nothing_else(
    project: Path, iso: Env, offline: Any, wheelhouse: Path, https_server: Any, manager: str
) -> None:
    """`--pip 'tinya @ https://user:PASS@WORD@host/...'` (a private package): pip (or uv) gets
    the password (the server sees it) in its environment, through a requirements file that
    says `${TORCHJOB_PIP_0}`: no process's argv holds it while the server is asked (it used
    to be pip's argument). run.json, setup.log, the console, the environment's cache record
    and a failed build's error message show `****`."""
    secret = f"s3cret{random.randrange(1 << 48):x}"  # no other test's process holds it
    https_server.watch_argv = secret
    wheel = next(wheelhouse.glob("tinya-1.0-*.whl"))
    shutil.copy(wheel, https_server.files / wheel.name)
    write(project / "main.py", SHOW)
    env = {**os.environ, **https_server.client_env(), "PIP_CERT": str(https_server.ca_file)}
    env.pop("UV_OFFLINE", None)  # uv may fetch from 127.0.0.1 (the index stays off: UV_NO_INDEX)
    spec = project.parent / "job.yaml"  # not `--pip`: torchjob's own argv would hold it

    def run(name: str) -> tuple[subprocess.CompletedProcess[bytes], str]:
        url = https_server.url(f"files/{name}").replace("://", f"://ci:{secret}@pw@")
        spec.write_text(json.dumps({"python": {"packages": [f"tinya @ {url}"]}}))
        argv = [str(spec), "-s", "main.py", "-p", str(project), "--env-manager", manager]
        res = torchjob("run", *argv, env=env)
        rec = newest_record(iso.runs)
        written = [iso.runs / rec["id"] / f for f in ("run.json", "setup.log", "packages.txt")]
        written += [
            p for p in (iso.home / "cache" / "envs").rglob("*.json") if "site-" not in str(p)
        ]
        text = b"".join([res.stdout, res.stderr, *(p.read_bytes() for p in written)]).decode()
        return res, text

    res, text = run(wheel.name)
    assert res.returncode == 0, res.stderr.decode()
    assert res.stdout.strip() == b"tinya 1.0"
    assert (
        f"Basic {base64.b64encode(f'ci:{secret}@pw'.encode()).decode()}" in https_server.auth_seen
    )
    assert https_server.argv_holding == []
    assert secret not in text and "@pw@" not in text  # pip allows @ in a password
    assert "ci:****@" in text
    again = torchjob("rerun", newest_record(iso.runs)["id"], env=env)
    assert again.returncode == 2
    assert b"python.packages masked" in again.stderr and b"--pip SPEC" in again.stderr
    missing = "no-such-1.0-py3-none-any.whl"  # the error names the file that holds its URL
    res, text = run(missing)
    assert res.returncode == 125
    assert secret not in text and "@pw@" not in text
    listed = iso.runs / newest_record(iso.runs)["id"] / "packages.txt"
    assert f"-r {listed}".encode() in res.stderr
    url = https_server.url(f"files/{missing}").replace("://", "://ci:${TORCHJOB_PIP_0}@")
    assert listed.read_text() == f"tinya @ {url}\n"  # as the tool read it, before expanding


def test_only_a_package_with_a_password_moves_to_packages_txt(tmp_path: Path) -> None:
    """A package whose URL holds a password goes to the tool through packages.txt, the `-r`
    where the first one stood; options stay arguments (in a requirements file pip would split
    their line like a shell and let an `--index-url` there replace every other index), and so
    does a package after an option that may take it as its value, with the log masking both as
    before. An empty password is no secret (pip would not expand an empty variable)."""
    token = "ghp_0123456789abcdefghijklmnopqrstuvwxyz"
    packages = (
        "numpy==2.0",
        "--index-url",
        "https://ci:pw1@pkgs.example/simple",
        "--no-index",
        f"tinya @ https://{token}:x-oauth-basic@host.example/tinya.whl",
        "--proxy",
        "http://ci:pw3@proxy.example:3128",
        "tinyb @ https://ci:pw@4@host.example/tinyb.whl ; python_version >= '3'",
        "tinyc @ https://TOKEN:@fury.example/tinyc.whl",
        "tinyd",
    )
    request = BuildRequest("python3", None, tmp_path / "r.txt", packages, None, False)
    args, secrets = _pip_args(request, tmp_path / "setup.log")
    listed = tmp_path / "packages.txt"
    assert args == [
        "-r",
        str(tmp_path / "r.txt"),
        "numpy==2.0",
        "--index-url",
        "https://ci:pw1@pkgs.example/simple",
        "--no-index",
        "-r",
        str(listed),
        "--proxy",
        "http://ci:pw3@proxy.example:3128",
        "tinyc @ https://TOKEN:@fury.example/tinyc.whl",
        "tinyd",
    ]
    assert listed.read_text().splitlines() == [
        "tinya @ https://${TORCHJOB_PIP_0}:${TORCHJOB_PIP_1}@host.example/tinya.whl",
        "tinyb @ https://ci:${TORCHJOB_PIP_2}@host.example/tinyb.whl ; python_version >= '3'",
    ]
    assert secrets == {
        "TORCHJOB_PIP_0": token,
        "TORCHJOB_PIP_1": "x-oauth-basic",
        "TORCHJOB_PIP_2": "pw@4",
    }
    assert _pip_args(replace(request, packages=("tinyd",)), tmp_path / "b.log") == (
        ["-r", str(tmp_path / "r.txt"), "tinyd"],
        {},
    )
