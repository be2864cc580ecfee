"""`show` (a human view, live while the run runs), `logs` (-f with the run's exit status and its
status line, --tail, --setup, a setup failure's tail), and the tables: local time under one
labelled zone, and a run id never cut at 80 columns."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from tests.helpers import TORCHJOB, Env, newest_record, torchjob, write
from tests.servers import git
from tests.terminal import Terminal

ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]")
GATED = (
    "import json, os, pathlib, sys\n"
    "out = pathlib.Path(os.environ['TORCHJOB_OUTPUT_DIR'])\n"
    "out.mkdir(parents=True, exist_ok=True)\n"
    "(out / 'metrics.json').write_text(json.dumps({'acc': 0.5}))\n"
    "print('first', flush=True)\n"
    "sys.stdin.read()\n"  # blocks until the test closes the job's stdin
    "(out / 'metrics.json').write_text(json.dumps({'acc': 0.75}))\n"
    "print('second')\n"
    "sys.exit(int(sys.argv[-1]))\n"
)


def _gated_job(project: Path, code: int, *extra: str) -> subprocess.Popen[bytes]:
    """A job that writes its first output and line, then waits for its stdin to close."""
    write(project / "gated.py", GATED)
    job = subprocess.Popen(
        [*TORCHJOB, "run", "-s", "gated.py", "-p", str(project), *extra, "--", str(code)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert job.stdout is not None
    assert job.stdout.readline() == b"first\n"
    return job


def _fields(text: bytes) -> dict[str, str]:
    pairs = (line.split(":", 1) for line in text.decode().splitlines())
    return {k: v.strip() for k, v in pairs}


def test_logs_follow_ends_with_the_status_line_and_exit_status(project: Path, iso: Env) -> None:
    job = _gated_job(project, 3)
    follow = subprocess.Popen(
        [*TORCHJOB, "logs", "-f"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert follow.stdout is not None and job.stdin is not None
    assert follow.stdout.readline() == b"first\n"
    assert follow.poll() is None
    job.stdin.close()
    assert job.wait(timeout=60) == 3
    rest, err = follow.communicate(timeout=60)
    assert rest == b"second\n"
    assert follow.returncode == 3
    run_dir = iso.runs / newest_record(iso.runs)["id"]
    last = err.decode().splitlines()[-1]
    assert last.startswith("torchjob: failed in ") and last.endswith(f"(exit 3); logs: {run_dir}")


def test_logs_follow_of_a_lost_run_exits_1(project: Path, iso: Env) -> None:
    """A record left `running` by a torchjob that died (kill -9, a reboot): its process is not
    the one that wrote it, so it shows as lost; the real exit status was never recorded."""
    write(project / "a.py", "print('partial')\n")
    assert torchjob("run", "-q", "-s", "a.py", "-p", str(project)).returncode == 0
    rec = newest_record(iso.runs)
    lost = {**rec, "status": "running", "exit_code": None, "ended_at": None, "pid_start": 1}
    (iso.runs / rec["id"] / "run.json").write_text(json.dumps(lost))
    res = torchjob("logs", "-f", rec["id"][-4:], timeout=60)
    assert (res.returncode, res.stdout) == (1, b"partial\n")
    last = res.stderr.decode().splitlines()[-1]
    assert last.startswith("torchjob: lost: the torchjob that ran it (pid ")
    assert last.endswith(f"is gone, so how the job ended is unknown; logs: {iso.runs / rec['id']}")
    shown = _fields(torchjob("show").stdout)
    assert shown["status"] == "lost" and "was never recorded" in shown["error"]


def test_logs_tail(project: Path, iso: Env) -> None:
    write(project / "n.py", "import sys\nsys.stdout.write('\\n'.join(map(str, range(1, 11))))\n")
    assert torchjob("run", "-q", "-s", "n.py", "-p", str(project)).returncode == 0
    assert torchjob("logs", "--tail", "3").stdout == b"8\n9\n10"  # a last line with no newline
    assert torchjob("logs", "-n", "1").stdout == b"10"
    assert torchjob("logs", "-n", "0").stdout == b""
    assert torchjob("logs", "-n", "99").stdout == b"\n".join(b"%d" % i for i in range(1, 11))
    res = torchjob("logs", "-f", "-n", "2")
    assert (res.returncode, res.stdout) == (0, b"9\n10")  # a log sent apart keeps its bytes
    assert res.stderr.decode().startswith("torchjob: succeeded in ")
    both = subprocess.run(  # one console for both: the status line gets a line of its own
        [*TORCHJOB, "logs", "-f", "-n", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        timeout=120,
    )
    assert both.stdout.startswith(b"9\n10\ntorchjob: succeeded in "), both.stdout
    write(project / "m.py", "print('a')\nprint('b')\n")
    assert torchjob("run", "-q", "-s", "m.py", "-p", str(project)).returncode == 0
    assert torchjob("logs", "--tail", "1").stdout == b"b\n"


def test_logs_of_a_setup_failure_show_the_end_of_setup_log(tmp_path: Path, iso: Env) -> None:
    url = f"file://{tmp_path / 'missing.git'}"
    res = torchjob("run", "-q", "-s", "a.py", "-p", url, "--allow-insecure-source")
    assert res.returncode == 125
    rec = newest_record(iso.runs)
    setup_log = (iso.runs / rec["id"] / "setup.log").read_bytes()
    assert setup_log.count(b"\n") > 3
    res = torchjob("logs")
    assert res.returncode == 0
    assert setup_log.endswith(res.stdout) and res.stdout.count(b"\n") == min(
        20, setup_log.count(b"\n")
    )
    note = res.stderr.decode()
    assert f"run {rec['id']} failed in setup (source)" in note
    assert f"torchjob logs {rec['id']} --setup" in note
    assert torchjob("logs", "-n", "2").stdout == b"".join(setup_log.splitlines(True)[-2:])
    assert torchjob("logs", "--setup").stdout == setup_log
    follow = torchjob("logs", "-f")
    assert follow.returncode == 125 and b"setup_error" in follow.stderr.splitlines()[-1]
    res = torchjob("logs", "--setup", "--stderr")
    assert res.returncode == 2 and b"--stderr and --setup" in res.stderr


def test_logs_setup_of_a_run_without_setup_tools(project: Path, iso: Env) -> None:
    write(project / "a.py", "print(1)\n")
    assert torchjob("run", "-q", "-s", "a.py", "-p", str(project)).returncode == 0
    (iso.runs / newest_record(iso.runs)["id"] / "setup.log").unlink(missing_ok=True)
    res = torchjob("logs", "--setup")
    assert res.returncode == 2 and b"has no setup.log" in res.stderr


def test_show_while_running_and_after(project: Path, iso: Env) -> None:
    git("init", "-q", "-b", "main", str(project))
    write(project / "gated.py", GATED)
    git("add", "-A", cwd=project)
    git("commit", "-qm", "x", cwd=project)
    sha = git("rev-parse", "HEAD", cwd=project).strip()
    job = _gated_job(project, 0, "-P", "lr=0.1")
    assert job.stdin is not None
    try:
        running = _fields(torchjob("show").stdout)
        rec = newest_record(iso.runs)
        assert running["status"] == "running"
        assert running["elapsed"].endswith("(still running)") and "duration" not in running
        assert running["outputs"] == "acc=0.5 (read now)"
        assert "exit" not in running and "ended" not in running
    finally:
        job.stdin.close()
    assert job.wait(timeout=60) == 0
    done = _fields(torchjob("show", rec["id"]).stdout)
    assert (done["status"], done["exit"], done["outputs"]) == ("succeeded", "0", "acc=0.75")
    assert re.fullmatch(r"\d+\.\d+s", done["duration"]) and "elapsed" not in done
    assert done["source"] == f"local {project}"
    assert done["commit"].startswith(sha)
    assert done["params"] == "lr=0.1" and done["script"] == "gated.py"
    assert done["environment"].startswith("none, python ")
    assert done["interpreter"] == rec["interpreter"]
    assert done["run folder"] == str(iso.runs / rec["id"])
    assert done["logs"].startswith("stdout.log, stderr.log")
    assert done["output"] == rec["output_dir"] and done["model"] == rec["model_dir"]


def test_tables_and_show_use_one_labelled_local_zone(project: Path, iso: Env) -> None:
    write(project / "a.py", "print(1)\n")
    assert torchjob("run", "-q", "-s", "a.py", "-p", str(project)).returncode == 0
    rec = newest_record(iso.runs)
    tokyo = {**os.environ, "TZ": "Asia/Tokyo"}
    head, row = torchjob("runs", env=tokyo).stdout.decode().splitlines()
    assert "STARTED (JST)" in head and "UTC" not in head
    started = time.strftime(
        "%Y-%m-%d %H:%M", time.gmtime(_epoch(rec["started_at"]) + 9 * 3600)
    )  # JST is UTC+9, no summer time
    assert started in row
    shown = _fields(torchjob("show", env=tokyo).stdout)
    assert shown["started"].endswith(" JST") and shown["ended"].endswith(" JST")
    assert (
        torchjob("env", "list", env=tokyo)
        .stdout.decode()
        .startswith("KEY  MANAGER  PYTHON  SIZE  CREATED (JST)  LAST USED (JST)")
    )
    cache = torchjob("cache", "list", env={**tokyo, "TZ": "UTC"}).stdout.decode()
    assert cache.startswith("KEY  SIZE  LAST USED (UTC)  URL")


def _epoch(iso_time: str) -> float:
    return datetime.fromisoformat(iso_time).timestamp()


def _long_runs(project: Path) -> list[dict[str, Any]]:
    write(project / "a.py", "print(1)\n")
    for name in ("x" * 40, "a name that is long"):
        assert (
            torchjob("run", "-q", "-s", "a.py", "-p", str(project), "--name", name).returncode == 0
        )
    return json.loads(torchjob("runs", "--json").stdout)  # type: ignore[no-any-return]


def _on_a_terminal(cols: int, *args: str) -> list[str]:
    """What `torchjob ARGS` shows on a terminal `cols` wide, colours taken out."""
    term = Terminal(list(args), {**os.environ, "TERM": "xterm"}, cols=cols)
    assert term.wait() == 0
    return ANSI.sub(b"", bytes(term.shown)).decode().replace("\r", "").splitlines()


def test_runs_never_cuts_an_id_at_80_columns(project: Path, iso: Env) -> None:
    records = _long_runs(project)
    wide = torchjob("runs").stdout.decode().splitlines()  # a pipe: every column, whole
    assert wide[0].split()[:3] == ["ID", "NAME", "STATUS"] and max(map(len, wide)) > 80
    narrow = _on_a_terminal(80, "runs")  # a 61-character id: only STATUS fits beside it
    assert [line.split()[0] for line in narrow[1:]] == [r["id"] for r in records]
    assert max(map(len, narrow)) <= 80 and narrow[0].split() == ["ID", "STATUS"]
    one = _on_a_terminal(80, "runs", "--name", "a name that is long")  # a 41-character id
    assert [line.split()[0] for line in one[1:]] == [records[0]["id"]]
    assert max(map(len, one)) <= 80 and one[0].split()[:4] == ["ID", "STATUS", "EXIT", "STARTED"]


def test_runs_shrinks_a_name_before_dropping_it(project: Path, iso: Env) -> None:
    write(project / "a.py", "print(1)\n")
    name = "n" * 12 + " and more words"
    assert torchjob("run", "-q", "-s", "a.py", "-p", str(project), "--name", name).returncode == 0
    full = torchjob("runs").stdout.decode().splitlines()
    assert name in full[1]
    cut = "\n".join(_on_a_terminal(max(map(len, full)) - 5, "runs"))
    assert name not in cut and name[:8] in cut and "NAME" in cut
    assert newest_record(iso.runs)["id"] in cut
