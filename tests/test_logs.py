"""Logs are byte-exact: both files and the console copy, for big, odd and concurrent output."""

from __future__ import annotations

import hashlib
import os
import pty
import re
import resource
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import TORCHJOB, Env, torchjob, write
from torchrun_cli.launch.relay import Relay

# Written into the job's project and also executed here, so both sides build the same bytes.
# stdout uses bytes 0x01-0x7f (with \r and \n), stderr only bytes 0x80-0xff (invalid UTF-8,
# one 10 MB line): stdout.log can then be split back into the two streams to check each one.
GEN = r"""
import os, random, sys, threading

def streams(out_mb, err_mb):
    rng = random.Random(1234)
    low = bytes(range(1, 128)) * 2 + b"\n" * 6 + b"\r" * 2
    high = bytes(range(128, 256))
    out = rng.randbytes(out_mb << 20).translate(bytes(low[i % len(low)] for i in range(256)))
    long_line = b"L" * (3 << 20)
    out = out[: len(out) // 2] + b"\n" + long_line + b"\n" + out[len(out) // 2 :]
    out += b"".join(b"\rprogress %d%%" % i for i in range(101))  # last line: no newline
    err = rng.randbytes(err_mb << 20).translate(bytes(high[i % 128] for i in range(256)))
    return out, err

def pour(fd, data, seed):
    rng = random.Random(seed)
    view = memoryview(data)
    while view:
        n = os.write(fd, view[: rng.choice((1, 7, 4096, 65536, 1 << 20))])
        view = view[n:]

if __name__ == "__main__":
    out, err = streams(int(sys.argv[1]), int(sys.argv[2]))
    t = threading.Thread(target=pour, args=(2, err, 2))
    t.start()
    pour(1, out, 1)
    t.join()
"""

HIGH = bytes(range(128, 256))
LOW = bytes(range(128))


def _streams(out_mb: int, err_mb: int) -> tuple[bytes, bytes]:
    ns: dict[str, Any] = {}
    exec(compile(GEN, "gen", "exec"), ns)  # noqa: S102 - our own generator text
    out, err = ns["streams"](out_mb, err_mb)
    return bytes(out), bytes(err)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _check_logs(run_dir: Path, out: bytes, err: bytes) -> None:
    """stderr.log is stderr; stdout.log is both streams, each one's bytes in its order."""
    both = (run_dir / "stdout.log").read_bytes()
    assert _sha((run_dir / "stderr.log").read_bytes()) == _sha(err)
    assert len(both) == len(out) + len(err)
    assert _sha(both.translate(None, HIGH)) == _sha(out)  # stdout's bytes, in order
    assert _sha(both.translate(None, LOW)) == _sha(err)  # stderr's bytes, in order


def test_100mb_stdout_and_10mb_stderr_at_once_are_byte_exact(project: Path, iso: Env) -> None:
    write(project / "gen.py", GEN)
    res = torchjob("run", "-s", "gen.py", "-p", str(project), "--", "100", "10", timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    out, err = _streams(100, 10)
    run_dir, rec = iso.only_run()
    _check_logs(run_dir, out, err)
    assert _sha(res.stdout) == _sha(out)  # the console copy of stdout
    assert err in res.stderr  # the console copy of stderr, between header and summary
    assert rec["status"] == "succeeded"


def test_quiet_logs_the_same_bytes_spliced(project: Path, iso: Env) -> None:
    """With no console copy, stdout goes into stdout.log by splice(2): the same bytes, both
    streams in order, the partial lines of 1-byte writes included."""
    write(project / "gen.py", GEN)
    res = torchjob("run", "-q", "-s", "gen.py", "-p", str(project), "--", "40", "4", timeout=300)
    assert (res.returncode, res.stdout, res.stderr) == (0, b"", b"")
    out, err = _streams(40, 4)
    run_dir, rec = iso.only_run()
    _check_logs(run_dir, out, err)
    assert rec["status"] == "succeeded"


def test_a_console_that_is_dev_null_gets_no_copy_and_the_logs_stay_exact(
    project: Path, iso: Env
) -> None:
    """cron's `> /dev/null`: torchjob skips the console copy of stdout and splices it as
    under -q; the logs must hold the same bytes, and the job's stderr still reaches
    torchjob's stderr."""
    write(project / "gen.py", GEN)
    argv = [*TORCHJOB, "run", "-s", "gen.py", "-p", str(project), "--", "8", "1"]
    res = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    out, err = _streams(8, 1)
    run_dir, _ = iso.only_run()
    _check_logs(run_dir, out, err)
    assert err in res.stderr


def test_the_relay_lands_at_the_log_s_end_and_says_where_lines_end(tmp_path: Path) -> None:
    """launch/relay.py on a real pipe and a real file: each move lands at the log's end (after
    what a script appended there itself), says whether the log now ends a line (which orders
    the two streams), and a closed pipe is size 0."""
    log = tmp_path / "stdout.log"
    log.write_bytes(b"")
    relay = Relay(log)
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, b"abc")
        assert relay.move(read_end) == (3, False, b"")
        os.write(write_end, b"def\n")
        assert relay.move(read_end) == (4, True, b"")
        with log.open("ab") as own:
            own.write(b"own line\n")
        os.write(write_end, b"50%\r")
        assert relay.move(read_end) == (4, True, b"")
        os.write(write_end, b"x" * 60_000)  # many pipe buffers (of 4 KiB), no line end
        assert relay.move(read_end) == (60_000, False, b"")
        os.close(write_end)
        assert relay.move(read_end) == (0, True, b"")
    finally:
        relay.close()
        os.close(read_end)
    assert log.read_bytes() == b"abcdef\nown line\n50%\r" + b"x" * 60_000


FULL = r"""
import sys
print("early err", file=sys.stderr, flush=True)
for i in range(40000):
    print("%060d" % i)
print("late err", file=sys.stderr)
"""


@pytest.mark.parametrize("quiet", [True, False], ids=["spliced", "copied"])
def test_a_log_that_cannot_grow_is_said_and_the_other_log_is_kept(
    project: Path, iso: Env, quiet: bool
) -> None:
    """RLIMIT_FSIZE (1 MiB) makes stdout.log refuse to grow, as a full disk would: the job
    still runs to its end, stderr.log still gets every line (it used to stop at the first
    failed write), and the run says which write failed."""
    write(project / "full.py", FULL)
    limit = 1 << 20

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    flags = ["-q"] if quiet else []
    res = torchjob("run", *flags, "-s", "full.py", "-p", str(project), preexec_fn=cap)
    assert res.returncode == 0, res.stderr[-2000:]
    run_dir, rec = iso.only_run()
    out = b"".join(b"%060d\n" % i for i in range(40000))
    logged = (run_dir / "stdout.log").read_bytes()
    assert len(logged) == limit
    assert out.startswith(logged.replace(b"early err\n", b"", 1))  # its place: arrival order
    assert (run_dir / "stderr.log").read_bytes() == b"early err\nlate err\n"
    assert rec["error"] == "writing a log failed: File too large"
    assert res.stdout == (b"" if quiet else out)


def test_small_odd_output_survives_exactly(project: Path, iso: Env) -> None:
    write(
        project / "odd.py",
        (
            "import os, pathlib, sys\n"
            "log = pathlib.Path(os.environ['TORCHJOB_RUN_DIR'], 'stdout.log')\n"
            "def said(data):  # wait until torchjob has logged it: arrival order is then defined\n"
            "    while not log.read_bytes().endswith(data):\n"
            "        pass\n"
            "sys.stdout.buffer.write(b'caf\\xc3\\xa9 \\xff\\xfe bad utf8\\n10%\\r50%\\r')\n"
            "sys.stdout.flush(); said(b'50%\\r')\n"
            "sys.stderr.buffer.write(b'warn\\x00 nul\\r\\n'); said(b'nul\\r\\n')\n"
            "sys.stdout.buffer.write(b'100%'); sys.stdout.flush(); said(b'100%')\n"
            "sys.stderr.buffer.write(b' no newline at end')\n"
        ),
    )
    res = torchjob("run", "-s", "odd.py", "-p", str(project))
    assert res.returncode == 0
    run_dir, _ = iso.only_run()
    out = b"caf\xc3\xa9 \xff\xfe bad utf8\n10%\r50%\r100%"
    err = b"warn\x00 nul\r\n no newline at end"
    assert (run_dir / "stdout.log").read_bytes() == (
        b"caf\xc3\xa9 \xff\xfe bad utf8\n10%\r50%\rwarn\x00 nul\r\n100% no newline at end"
    )
    assert (run_dir / "stderr.log").read_bytes() == err
    assert res.stdout == out


def test_quiet_prints_nothing_on_success(project: Path) -> None:
    write(project / "ok.py", "print('hi')\n")
    res = torchjob("run", "-q", "-s", "ok.py", "-p", str(project))
    assert (res.returncode, res.stdout, res.stderr) == (0, b"", b"")


def test_quiet_failure_shows_summary_and_last_50_lines(project: Path, iso: Env) -> None:
    write(project / "bad.py", "for i in range(80):\n    print('line', i)\nraise SystemExit(4)\n")
    res = torchjob("run", "-q", "-s", "bad.py", "-p", str(project))
    assert res.returncode == 4
    assert res.stdout == b""
    err = res.stderr.decode()
    assert "line 79" in err and "line 30" in err and "line 29\n" not in err
    run_dir, _ = iso.only_run()
    assert err.rstrip().splitlines()[-1].endswith(f"logs: {run_dir}")
    assert "failed" in err.splitlines()[-1]


def test_header_and_summary_are_plain_lines_off_a_terminal(project: Path, iso: Env) -> None:
    write(project / "ok.py", "print('hi')\n")
    res = torchjob("run", "-s", "ok.py", "-p", str(project))
    run_dir, rec = iso.only_run()
    lines = res.stderr.decode().splitlines()
    assert lines[0] == f"torchjob: run {rec['id']}"
    assert any(str(project) in line for line in lines[1:3])
    assert lines[-1].startswith("torchjob: succeeded in ")
    assert lines[-1].endswith(f"(exit 0); logs: {run_dir}")
    assert "\x1b[" not in res.stderr.decode()


def _on_a_terminal(args: list[str], env: dict[str, str]) -> bytes:
    """Run torchjob with a pseudo-terminal as stdout and stderr; return what it showed."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [*TORCHJOB, *args], stdout=slave, stderr=slave, stdin=subprocess.DEVNULL, env=env
    )
    os.close(slave)
    shown = b""
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the terminal's other side closed
            break
        if not data:
            break
        shown += data
    os.close(master)
    assert proc.wait(timeout=60) == 0
    return shown


def test_colour_only_on_a_terminal_and_no_color_is_respected(project: Path) -> None:
    write(project / "ok.py", "print('hi')\n")
    args = ["run", "-s", "ok.py", "-p", str(project)]
    colour = re.compile(rb"\x1b\[[0-9;]*3[0-7]m")
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    shown = _on_a_terminal(args, {**env, "TERM": "xterm"})
    assert colour.search(shown) and b"hi" in shown
    plain = _on_a_terminal(args, {**env, "TERM": "xterm", "NO_COLOR": "1"})
    assert not colour.search(plain) and b"succeeded" in plain
    off_terminal = torchjob(*args)
    assert b"\x1b[" not in off_terminal.stderr + off_terminal.stdout
