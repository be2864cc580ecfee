"""How runs end, as run.json and the exit status say it: a crash still finalises the record,
setup failures are setup errors, cancel acts only on the run's own process, and every failed
run says why, once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.helpers import Env, alive, torchjob, write
from tests.servers import make_bare_repo

# Runs torchjob's own main() with one core function replaced by a bug: nothing real fails this
# way on purpose, and the point is what the run's record says afterwards.
_WITH_BUG = (
    "import sys, importlib; m = importlib.import_module(sys.argv.pop(1)); "
    "setattr(m, sys.argv.pop(1), lambda *a, **k: 1 / 0); "
    "from torchrun_cli.cli import main; sys.argv[0] = 'torchjob'; main()"
)


def with_bug(module: str, name: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-c", _WITH_BUG, module, name, *args],
        capture_output=True,
        check=False,
        timeout=120,
    )


def test_a_bug_during_setup_still_finalises_the_record(project: Path, iso: Env) -> None:
    write(project / "a.py", "print('ran')\n")
    res = with_bug("torchrun_cli.envs", "materialize", "run", "-s", "a.py", "-p", str(project))
    assert res.returncode == 1 and b"internal error" in res.stderr
    _, rec = iso.only_run()
    assert (rec["status"], rec["exit_code"], rec["phase"]) == ("setup_error", 1, "environment")
    assert "ZeroDivisionError" in rec["error"] and rec["ended_at"]


def test_a_bug_after_the_job_ran_still_finalises_the_record(project: Path, iso: Env) -> None:
    write(project / "a.py", "print('ran')\n")
    res = with_bug(
        "torchrun_cli.launch.conventions", "read_outputs", "run", "-s", "a.py", "-p", str(project)
    )
    assert res.returncode == 1 and res.stdout == b"ran\n"
    _, rec = iso.only_run()
    assert (rec["status"], rec["phase"]) == ("failed", "job")
    assert torchjob("runs", "--json").stdout.count(b'"status": "failed"') == 1


def test_an_unusable_cache_is_a_setup_error_not_a_launch_failure(project: Path, iso: Env) -> None:
    """The cache folder is a file: this used to end as failed/127/launch."""
    write(project / "a.py", "print('ran')\n")
    write(iso.home / "cache", "not a folder")
    res = torchjob("run", "-s", "a.py", "-p", str(project), "--env-manager", "virtualenv")
    assert res.returncode == 125, res.stderr
    _, rec = iso.only_run()
    assert (rec["status"], rec["phase"]) == ("setup_error", "environment")
    assert b"Traceback" not in res.stderr
    plan = torchjob("run", "-s", "a.py", "-p", str(project), "--env-manager", "uv", "--dry-run")
    assert plan.returncode == 0 and b"a run would exit 125" in plan.stdout, plan.stderr


def _fake_running(iso: Env, project: Path, **changes: object) -> str:
    """A finished run's record turned into a running one with other owners."""
    write(project / "a.py", "print('ran')\n")
    assert torchjob("run", "-q", "-s", "a.py", "-p", str(project)).returncode == 0
    run_dir, rec = iso.only_run()
    rec.update(status="running", exit_code=None, ended_at=None, **changes)
    (run_dir / "run.json").write_text(json.dumps(rec))
    return str(rec["id"])


def _start_ticks(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])


def test_cancel_never_signals_a_process_of_another_host_or_a_reused_pid(
    project: Path, iso: Env
) -> None:
    """A record written on another host (a shared runs folder) names a pid that means nothing
    here; neither does a pid the kernel gave to another process since."""
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        run_id = _fake_running(
            iso, project, host="elsewhere", pid=bystander.pid, pid_start=_start_ticks(bystander.pid)
        )
        res = torchjob("cancel", run_id)
        assert res.returncode == 2 and b"runs on host elsewhere" in res.stderr
        record = iso.runs / run_id / "run.json"
        rec = json.loads(record.read_text())
        rec.update(host=os.uname().nodename, pid_start=_start_ticks(bystander.pid) - 1)
        record.write_text(json.dumps(rec))
        res = torchjob("cancel", run_id)
        assert res.returncode == 2 and b"is lost" in res.stderr
        assert alive(bystander.pid) and bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


def test_show_json_and_runs_json_agree_on_a_lost_run(project: Path, iso: Env) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    run_id = _fake_running(iso, project, pid=gone.pid, pid_start=1)
    shown = json.loads(torchjob("show", run_id, "--json").stdout)
    listed = json.loads(torchjob("runs", "--json").stdout)
    assert shown["status"] == listed[0]["status"] == "lost"


def test_a_bad_status_filter_is_exit_2_with_the_valid_values(iso: Env) -> None:
    res = torchjob("runs", "--status", "bogus")
    assert res.returncode == 2
    assert b"succeeded, failed" in res.stderr and b"lost" in res.stderr


def test_a_missing_script_is_said_once(project: Path, iso: Env) -> None:
    res = torchjob("run", "-s", "nope.py", "-p", str(project))
    assert res.returncode == 127
    assert res.stderr.count(b"script not found") == 1, res.stderr


def test_every_failed_run_says_why(project: Path, iso: Env) -> None:
    write(project / "a.py", "raise SystemExit(3)\n")
    res = torchjob("run", "-s", "a.py", "-p", str(project))
    assert res.returncode == 3
    rec = json.loads(torchjob("show", "last", "--json").stdout)
    assert rec["error"] == "the script exited with status 3"
    assert b"failed in" in res.stderr and b"(exit 3)" in res.stderr


def test_an_over_long_command_is_refused_before_anything_runs(project: Path, iso: Env) -> None:
    """One argument over 128 KiB, or all of them with the environment over ARG_MAX, fail exec
    with E2BIG: that used to be reported as 127 'cannot start', after the run had begun. The
    values come from a spec file, since torchjob's own command line has the same limits."""
    write(project / "a.py", "open('ran', 'w')\n")
    big = write(project / "big.yaml", f"script: a.py\nparams:\n  blob: {'x' * (200 << 10)}\n")
    res = torchjob("run", str(big))
    assert res.returncode == 2 and b"more than one process argument" in res.stderr
    limit = os.sysconf("SC_ARG_MAX")
    inherited = {f"FILLER_{i}": "z" * (100 << 10) for i in range((limit - 700_000) // (100 << 10))}
    params = "".join(f"  p{i}: {'y' * (100 << 10)}\n" for i in range(8))  # 800 KiB
    many = write(project / "many.yaml", f"script: a.py\nparams:\n{params}")
    res = torchjob("run", str(many), env={**os.environ, **inherited})
    assert res.returncode == 2 and b"more than this system lets a process start" in res.stderr
    assert not (project / "ran").exists() and not iso.runs.exists()


def test_a_failed_setup_keeps_what_was_learned_before_it(
    tmp_path: Path, iso: Env, offline: Any
) -> None:
    """A git project whose environment cannot be built: run.json still names the commit that
    was checked out, as well as the failure."""
    shas = make_bare_repo(
        tmp_path / "r.git", [{"a.py": "print(1)\n", "requirements.txt": "nosuchpackage==1.0\n"}]
    )
    res = torchjob(
        "run",
        "-s",
        "a.py",
        "-p",
        f"file://{tmp_path}/r.git",
        "--allow-insecure-source",
        "--env-manager",
        "virtualenv",
    )
    assert res.returncode == 125, res.stderr
    _, rec = iso.only_run()
    assert (rec["status"], rec["phase"]) == ("setup_error", "environment")
    assert rec["source"]["commit"] == shas[0]
