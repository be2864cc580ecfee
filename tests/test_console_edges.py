"""What happens around the job when its surroundings misbehave: processes that escape the
group, consoles that close, block or are non-blocking, records that are broken."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import subprocess
import threading
from pathlib import Path

import pytest

from tests.helpers import HELD_TOO_LONG, TORCHJOB, Env, newest_record, torchjob, write
from torchrun_cli.launch.streams import STDERR, STDOUT, Console


def test_escaped_process_holding_the_pipe_does_not_hang_or_corrupt(project: Path, iso: Env) -> None:
    """A grandchild leaves the process group (setsid) and keeps writing to the job's stdout."""
    write(
        project / "escape.py",
        (
            "import subprocess, sys\n"
            "code = 'import os\\nwhile True: os.write(1, b\"ESCAPED\\\\n\" * 50)'\n"
            "p = subprocess.Popen([sys.executable, '-c', code], start_new_session=True)\n"
            "open('escaped.pid', 'w').write(str(p.pid))\n"
            "print('main done', flush=True)\n"
        ),
    )
    try:
        res = torchjob("run", "-q", "-s", "escape.py", "-p", str(project), timeout=60)
        assert res.returncode == 0, res.stderr
        assert b"Traceback" not in res.stderr
        run_dir, rec = iso.only_run()
        assert rec["status"] == "succeeded"
        assert b"main done\n" in (run_dir / "stdout.log").read_bytes()
    finally:  # it usually died of SIGPIPE when torchjob stopped reading
        with contextlib.suppress(ProcessLookupError):
            os.kill(int((project / "escaped.pid").read_text()), 9)


def test_console_gone_during_a_stop_keeps_the_exit_status(project: Path, iso: Env) -> None:
    write(project / "sleep.py", "import time\nprint('up', flush=True)\ntime.sleep(60)\n")
    proc = subprocess.Popen(
        [*TORCHJOB, "run", "-s", "sleep.py", "-p", str(project), "--timeout", "1", "--grace", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline() == b"up\n"
    proc.stderr.close()  # like `2>&1 | head -1`: every later console write fails
    proc.stdout.close()
    assert proc.wait(timeout=60) == 124
    _, rec = iso.only_run()
    assert (rec["status"], rec["exit_code"]) == ("timeout", 124)


def test_closed_stdout_does_not_leak_into_the_log(project: Path, iso: Env) -> None:
    write(project / "hi.py", "print('hi')\n")
    res = subprocess.run(
        [*TORCHJOB, "run", "-s", "hi.py", "-p", str(project)],
        preexec_fn=lambda: os.close(1),
        capture_output=False,
        stderr=subprocess.DEVNULL,
        check=False,
    )
    assert res.returncode == 0
    run_dir, _ = iso.only_run()
    assert (run_dir / "stdout.log").read_bytes() == b"hi\n"


def test_non_blocking_console_still_gets_everything(project: Path) -> None:
    write(project / "many.py", "import sys\nfor i in range(200000):\n    print(i)\n")
    read_end, write_end = os.pipe()
    flags = fcntl.fcntl(write_end, fcntl.F_GETFL)
    fcntl.fcntl(write_end, fcntl.F_SETFL, flags | os.O_NONBLOCK)
    got = bytearray()

    def reader() -> None:
        while chunk := os.read(read_end, 4096):
            got.extend(chunk)

    thread = threading.Thread(target=reader)
    thread.start()
    proc = subprocess.Popen(
        [*TORCHJOB, "run", "-s", "many.py", "-p", str(project)],
        stdout=write_end,
        stderr=subprocess.DEVNULL,
    )
    os.close(write_end)
    assert proc.wait(timeout=120) == 0
    thread.join()
    os.close(read_end)
    assert bytes(got) == "".join(f"{i}\n" for i in range(200000)).encode()


def test_broken_records_give_clear_errors(iso: Env) -> None:
    (iso.runs / "20990101-000000-x-0000").mkdir(parents=True)
    res = torchjob("show", "2099")
    assert res.returncode == 2 and b"no readable run.json" in res.stderr
    (iso.runs / "20990101-000000-x-0000" / "run.json").write_text("[]")
    res = torchjob("logs", "2099", "-f")
    assert res.returncode == 2 and b"Traceback" not in res.stderr


def test_secrets_stay_out_of_messages_and_records(project: Path, iso: Env) -> None:
    write(project / "a.py", "print('ok')\n")
    res = torchjob("run", "-s", "a.py", "-p", str(project), "-E", "HF_TOKEN:hf_realsecret")
    assert res.returncode == 2 and b"hf_realsecret" not in res.stderr
    res = torchjob(
        "run",
        "-q",
        "-s",
        "a.py",
        "-p",
        str(project),
        "-E",
        "DATABASE_URL=postgres://u:dbpass123@h/db",
        "-E",
        "MY_PASS=pw12345",
        "--",
        "--password",
        "hunter22",
        "--token=tok98765",
    )
    assert res.returncode == 0
    text = (iso.run_dirs()[0] / "run.json").read_text()
    for secret in ("dbpass123", "pw12345", "hunter22", "tok98765"):
        assert secret not in text
    rec = json.loads(text)
    assert rec["argv"][-3:] == ["--password", "****", "--token=****"]
    assert rec["spec"]["env"]["DATABASE_URL"] == "postgres://u:****@h/db"


def test_durations_beyond_a_year_are_refused(project: Path) -> None:
    write(project / "a.py", "print('ok')\n")
    for flag in ("--timeout", "--grace"):
        res = torchjob("run", "-s", "a.py", "-p", str(project), flag, "400d")
        assert res.returncode == 2 and b"365 days" in res.stderr


def test_a_reader_that_stops_early_ends_logs_quietly_but_never_a_run(
    project: Path, iso: Env
) -> None:
    """`torchjob logs last | head -1`: logs dies of SIGPIPE as cat does (no message, not the
    exit 1 click gives); `torchjob run | head -1` still runs the job to its end."""
    write(
        project / "many.py",
        "import sys\nfor i in range(200000): print(i)\nprint('done', file=sys.stderr)\n",
    )
    for argv in (["logs", "last"], ["run", "-s", "many.py", "-p", str(project)]):
        if argv[0] == "logs":
            assert torchjob("run", "-q", "-s", "many.py", "-p", str(project)).returncode == 0
        proc = subprocess.Popen([*TORCHJOB, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdout is not None and proc.stderr is not None
        assert proc.stdout.readline() == b"0\n"
        proc.stdout.close()  # the reader goes away, as head does
        err = proc.stderr.read()
        code = proc.wait(timeout=60)
        if argv[0] == "logs":
            assert (code, err) == (-13, b"")  # killed by SIGPIPE, silently
        else:
            assert code == 0 and b"done" in err
    runs = [json.loads((d / "run.json").read_text()) for d in iso.run_dirs()]
    assert sorted(r["status"] for r in runs) == ["succeeded", "succeeded"]


def _read_until(fd: int, needle: bytes, seen: bytearray) -> None:
    """Read fd into seen until it holds needle (or the stream ends: the assertion says)."""
    while needle not in seen:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        seen += chunk
    assert needle in seen, bytes(seen)


@pytest.mark.parametrize("end", ["stderr", "stdout"])
def test_a_shown_partial_line_is_ended_before_the_other_stream_writes(
    project: Path, iso: Env, end: str
) -> None:
    """A partial line held past its moment is shown; when the other stream then writes to the
    same console (2>&1), the console gets a line break first instead of `part-A ERRLINE`, and
    the run's end closes an open line before torchjob's status line. stdout.log keeps the
    bytes as they came; a console of stdout's own gets no added byte, not even at the end."""
    write(project / "held.py", HELD_TOO_LONG)
    argv = [*TORCHJOB, "run", "-s", "held.py", "-p", str(project)]
    for shared in (True, False):
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if shared else subprocess.PIPE,
            env={**os.environ, "HELD_END": end},
        )
        out, err = bytearray(), bytearray()
        errors = proc.stdout if shared else proc.stderr
        assert proc.stdin is not None and proc.stdout is not None and errors is not None
        for fd, seen, needle in (
            (proc.stdout.fileno(), out, b"part-A "),
            (errors.fileno(), out if shared else err, b"ERRLINE\n"),
            (proc.stdout.fileno(), out, b"part-B\n"),
        ):
            _read_until(fd, needle, seen)
            proc.stdin.write(b"\n")
            proc.stdin.flush()
        out += proc.stdout.read()
        if not shared:
            err += errors.read()
        assert proc.wait(timeout=60) == 0
        run_dir = iso.runs / newest_record(iso.runs)["id"]
        assert (run_dir / "stdout.log").read_bytes() == b"part-A ERRLINE\npart-B\ntail"
        if shared:
            assert b"\npart-A \nERRLINE\npart-B\ntail\ntorchjob: succeeded in " in out
        elif end == "stderr":
            assert out == b"part-A part-B\n"
            assert b"\nERRLINE\ntail\ntorchjob: succeeded in " in err
        else:
            assert out == b"part-A part-B\ntail"
            assert b"\nERRLINE\ntorchjob: succeeded in " in err


def test_the_console_breaks_a_line_only_where_one_is_open() -> None:
    """Console's rule on a real pipe, both streams on it (as on a terminal), at chosen
    moments: a break before the other stream writes into a shown partial line, none when the
    data starts a line itself, none after a progress bar that cleared itself (tqdm's
    leave=False), and one at the end."""
    read_end, write_end = os.pipe()
    interrupt, _ = os.pipe()
    console = Console(False)  # no console of its own: the pipe below is given as both
    console.targets = {STDOUT: (write_end, False), STDERR: (write_end, False)}
    console.shared = True
    steps = [
        (STDOUT, b"\rdownloading 20%"),
        (STDERR, b"\nerror: no space\n"),  # starts its own line
        (STDERR, b"\r 50%|#####"),
        (STDERR, b"\r          \r"),  # the bar cleared its line
        (STDOUT, b"epoch 1\n"),
        (STDOUT, b"part-A "),
        (STDERR, b"ERRLINE\n"),
        (STDOUT, b"tail"),
    ]
    for moment, (stream, data) in enumerate(steps):
        console.feed(stream, data, float(moment))
        console.release(moment + 0.5)  # past HOLD_S: a partial line is shown
    console.finish(interrupt)
    os.close(write_end)
    shown = b"".join(iter(lambda: os.read(read_end, 65536), b""))
    assert shown == (
        b"\rdownloading 20%\nerror: no space\n\r 50%|#####\r          \repoch 1\n"
        b"part-A \nERRLINE\ntail\n"
    )
