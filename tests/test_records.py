"""Run folders and records, the child's environment, and the runs/show/logs commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.helpers import TORCHJOB, Env, torchjob, write

REQUIRED = (
    "id",
    "name",
    "status",
    "exit_code",
    "signal",
    "phase",
    "error",
    "started_at",
    "ended_at",
    "duration_s",
    "argv",
    "cwd",
    "source",
    "environment",
    "params",
    "spec",
    "torchjob_version",
)


def test_record_fields_and_secrets_masked(project: Path, iso: Env) -> None:
    write(project / "main.py", "import os\nprint(os.environ['HF_TOKEN'] == 't0k3n')\n")
    res = torchjob(
        "run",
        "-s",
        "main.py",
        "-p",
        str(project),
        "--name",
        "my job!",
        "-P",
        "api-key=s3cr3t",
        "-P",
        "lr=0.1",
        "-E",
        "HF_TOKEN=t0k3n",
    )
    assert res.returncode == 0
    assert res.stdout == b"True\n"  # the script got the real value
    run_dir, rec = iso.only_run()
    text = (run_dir / "run.json").read_text()
    assert "s3cr3t" not in text and "t0k3n" not in text
    assert next(iter(rec)) == "schema_version"
    assert all(k in rec for k in REQUIRED)
    assert rec["name"] == "my job!" and "-my-job-" in rec["id"]
    assert rec["argv"][-4:] == ["--api-key", "****", "--lr", "0.1"]
    assert rec["params"] == {"api-key": "****", "lr": "0.1"}
    assert rec["spec"]["env"] == {"HF_TOKEN": "****"}
    assert rec["source"]["kind"] == "local" and rec["source"]["path"] == str(project)
    assert rec["environment"]["manager"] == "none"
    assert rec["environment"]["python_version"] == ".".join(map(str, sys.version_info[:3]))
    assert rec["ended_at"] >= rec["started_at"] and rec["duration_s"] >= 0
    assert rec["cwd"] == str(project)


def test_record_says_running_while_the_job_runs(project: Path, iso: Env) -> None:
    write(
        project / "main.py",
        (
            "import json, os, pathlib\n"
            "d = pathlib.Path(os.environ['TORCHJOB_RUN_DIR'])\n"
            "rec = json.loads((d / 'run.json').read_text())\n"
            "print(rec['status'], rec['id'] == os.environ['TORCHJOB_RUN_ID'])\n"
        ),
    )
    res = torchjob("run", "-q", "-s", "main.py", "-p", str(project))
    assert res.returncode == 0
    _, rec = iso.only_run()
    assert (iso.runs / rec["id"] / "stdout.log").read_bytes() == b"running True\n"
    assert rec["status"] == "succeeded"


def test_child_environment_cwd_and_pythonpath(project: Path, iso: Env) -> None:
    """The project is importable from a script in a subfolder; cwd is the project."""
    write(project / "mylib.py", "VALUE = 'from project'\n")
    write(
        project / "sub" / "train.py",
        (
            "import os, sys, mylib\n"
            "print(mylib.VALUE, os.getcwd(), os.environ['PYTHONPATH'],\n"
            "      os.environ['PYTHONUNBUFFERED'], os.environ['OMP_NUM_THREADS'], sep='|')\n"
        ),
    )
    spec = write(
        project / "cfg" / "job.yaml",
        ("project: ..\nscript: sub/train.py\nenv:\n  OMP_NUM_THREADS: 4\n"),
    )
    env = {**os.environ, "PYTHONPATH": "/inherited/path"}
    res = torchjob("run", str(spec), cwd=iso.tmp, env=env)
    assert res.returncode == 0, res.stderr
    assert res.stdout.decode().strip().split("|") == [
        "from project",
        str(project),
        f"{project}{os.pathsep}/inherited/path",
        "1",
        "4",
    ]


def test_flag_beats_file_beats_default(project: Path, iso: Env) -> None:
    write(project / "a.py", "print('a')\n")
    write(project / "b.py", "print('b')\n")
    spec = write(project / "job.yaml", "name: fromfile\nscript: a.py\n")
    assert torchjob("run", "-q", str(spec)).returncode == 0
    assert torchjob("run", "-q", str(spec), "-s", "b.py", "--name", "fromflag").returncode == 0
    recs = json.loads(torchjob("runs", "--json").stdout)
    assert [(r["name"], r["spec"]["script"]) for r in recs] == [
        ("fromflag", "b.py"),
        ("fromfile", "a.py"),
    ]


def test_runs_show_and_lookup(project: Path, iso: Env) -> None:
    write(project / "ok.py", "print('ok')\n")
    write(project / "bad.py", "raise SystemExit(3)\n")
    for script in ("ok.py", "bad.py", "ok.py"):
        torchjob("run", "-q", "-s", script, "-p", str(project))
    rows = json.loads(torchjob("runs", "--json").stdout)
    assert [r["status"] for r in rows] == ["succeeded", "failed", "succeeded"]
    assert [r["started_at"] for r in rows] == sorted((r["started_at"] for r in rows), reverse=True)
    failed = json.loads(torchjob("runs", "--json", "--status", "failed").stdout)
    assert [r["name"] for r in failed] == ["bad"]
    assert len(json.loads(torchjob("runs", "--json", "--limit", "1").stdout)) == 1
    assert len(json.loads(torchjob("runs", "--json", "--name", "ok").stdout)) == 2
    table = torchjob("runs").stdout.decode().splitlines()
    assert table[0].split()[:3] == ["ID", "NAME", "STATUS"] and len(table) == 4

    last = json.loads(torchjob("show", "last", "--json").stdout)
    assert last["id"] == rows[0]["id"]
    prefix = rows[1]["id"][: len(rows[1]["id"]) - 2]
    shown = torchjob("show", rows[1]["id"]).stdout.decode()
    assert "status:" in shown and "failed" in shown
    res = torchjob("show", "2")  # every id starts with the year: ambiguous
    assert res.returncode == 2 and b"matches 3 runs" in res.stderr
    res = torchjob("show", "nope")
    assert res.returncode == 2 and b"no run matches" in res.stderr
    assert torchjob("show", prefix).returncode in (0, 2)  # unique or not, never a crash


def test_logs_prints_both_logs_byte_exact(project: Path, iso: Env) -> None:
    write(project / "m.py", "import sys\nprint('out')\nsys.stderr.write('err\\xff\\n')\n")
    torchjob("run", "-q", "-s", "m.py", "-p", str(project))
    run_dir, rec = iso.only_run()
    assert torchjob("logs", "last").stdout == (run_dir / "stdout.log").read_bytes()
    assert torchjob("logs", rec["id"][:-1], "--stderr").stdout == "err\xff\n".encode()


def test_logs_follow_streams_a_running_job_until_it_ends(project: Path, iso: Env) -> None:
    gate = iso.tmp / "gate"
    write(
        project / "slow.py",
        (
            "import pathlib, sys\n"
            f"gate = pathlib.Path({str(gate)!r})\n"
            "print('first', flush=True)\n"
            "sys.stdin.read()\n"  # blocks until the test closes the job's stdin
            "print('second')\n"
        ),
    )
    job = subprocess.Popen(
        [*TORCHJOB, "run", "-s", "slow.py", "-p", str(project)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert job.stdin is not None and job.stdout is not None
    assert job.stdout.readline() == b"first\n"
    follow = subprocess.Popen([*TORCHJOB, "logs", "-f", "last"], stdout=subprocess.PIPE)
    assert follow.stdout is not None
    assert follow.stdout.readline() == b"first\n"
    assert follow.poll() is None  # still following: the job has not ended
    job.stdin.close()
    assert job.wait(timeout=60) == 0
    rest, _ = follow.communicate(timeout=60)
    assert rest == b"second\n"
    assert follow.returncode == 0


def test_fifty_runs_at_once_get_fifty_folders(project: Path, iso: Env) -> None:
    write(project / "hi.py", "print('hi')\n")
    procs = [
        subprocess.Popen(
            [*TORCHJOB, "run", "-q", "-s", "hi.py", "-p", str(project), "--name", "same"],
            stdout=subprocess.DEVNULL,
        )
        for _ in range(50)
    ]
    assert [p.wait(timeout=300) for p in procs] == [0] * 50
    dirs = iso.run_dirs()
    assert len(dirs) == 50
    recs = [json.loads((d / "run.json").read_text()) for d in dirs]
    assert len({r["id"] for r in recs}) == 50
    assert all(r["status"] == "succeeded" for r in recs)
    assert all((d / "stdout.log").read_bytes() == b"hi\n" for d in dirs)


def test_module_entry_point_and_version() -> None:
    res = subprocess.run(
        [sys.executable, "-m", "torchrun_cli", "--version"], capture_output=True, check=False
    )
    assert res.returncode == 0 and res.stdout.startswith(b"torchjob ")


def test_unusable_runs_dir_is_a_clear_error(project: Path, iso: Env) -> None:
    write(project / "a.py", "print(1)\n")
    blocker = write(iso.tmp / "blocker", "")
    res = torchjob("run", "-s", "a.py", "-p", str(project), "--runs-dir", str(blocker / "x"))
    assert res.returncode == 2
    assert b"cannot use" in res.stderr and b"Traceback" not in res.stderr


def test_internal_errors_have_no_traceback_unless_debug(project: Path) -> None:
    """A bug is injected (make_plan raises ZeroDivisionError): nothing real fails this way on
    purpose, and the point is what the CLI does with an unexpected exception."""
    write(project / "a.py", "print(1)\n")
    code = (
        "import sys, torchrun_cli.jobs.run as j; j.make_plan = lambda *a: 1 / 0; "
        "from torchrun_cli.cli import main; sys.argv[0] = 'torchjob'; main()"
    )
    for debug in ([], ["--debug"]):
        res = subprocess.run(
            [sys.executable, "-c", code, *debug, "run", "-s", "a.py", "-p", str(project)],
            capture_output=True,
            check=False,
        )
        assert res.returncode == 1
        if debug:
            assert b"Traceback" in res.stderr and b"ZeroDivisionError" in res.stderr
        else:
            assert b"Traceback" not in res.stderr and b"--debug" in res.stderr
