"""Pipelines with real processes: every step is a real `torchjob` run of a real script, the
scheduler a real forked process tree. What is asserted is what a user sees: the order, the
overlap, the values that reach argv, the records, the exit status, and that nothing is left
running."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import TORCHJOB, Env, alive, gone_within, torchjob, wait_until, write
from tests.terminal import Terminal

# A step that counts its executions, then does what its argv says.
STEP = """
import json, os, pathlib, sys, time
name, log = sys.argv[1], pathlib.Path(sys.argv[2])
with log.open("a") as fh:
    fh.write(name + "\\n")
out = pathlib.Path(os.environ["TORCHJOB_OUTPUT_DIR"])
(out / "output_parameters").mkdir(parents=True, exist_ok=True)
(out / "output_parameters" / "who").write_text(name + "\\n")
if len(sys.argv) > 3 and sys.argv[3] == "fail":
    sys.exit(3)
if len(sys.argv) > 3 and sys.argv[3] == "hang":
    (log.parent / f"{name}.pid").write_text(str(os.getpid()))
    while True:
        time.sleep(0.05)
"""


def _pipeline(project: Path, text: str) -> Path:
    write(project / "step.py", STEP)
    return write(project / "pipeline.yaml", text)


def _step(name: str, log: Path, *extra: str, needs: tuple[str, ...] = ()) -> str:
    args = json.dumps([name, str(log), *extra])
    need = f", needs: {json.dumps(list(needs))}" if needs else ""
    return f"  {name}: {{script: step.py, args: {args}{need}}}\n"


def _record(runs: Path, res: subprocess.CompletedProcess[bytes]) -> dict[str, Any]:
    """The pipeline.json of the only pipeline in the runs folder."""
    folders = [p for p in runs.iterdir() if (p / "pipeline.json").is_file()]
    assert len(folders) == 1, (folders, res.stderr.decode())
    data: dict[str, Any] = json.loads((folders[0] / "pipeline.json").read_text())
    return data


def _pipelines(runs: Path) -> list[dict[str, Any]]:
    found = [json.loads(p.read_text()) for p in runs.glob("*/pipeline.json")]
    return sorted(found, key=lambda r: r["started_at"])


def _run_record(step: dict[str, Any]) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((Path(step["run_dir"]) / "run.json").read_text())
    return data


BARRIER = """
import pathlib, sys, time
folder, name = pathlib.Path(sys.argv[1]), sys.argv[2]
(folder / "started" / name).touch()
(folder / "running" / name).touch()
at_once = len(list((folder / "running").iterdir()))
(folder / "seen" / f"{name}-{at_once}").touch()
position = len(list((folder / "started").iterdir()))
wave = 2 * ((position + 1) // 2)  # wait for the step that shares this one's wave
deadline = time.monotonic() + 30
while len(list((folder / "started").iterdir())) < wave:
    if time.monotonic() > deadline:
        sys.exit(9)
    time.sleep(0.01)
(folder / "running" / name).unlink()
"""


def test_steps_run_in_parallel_up_to_max_parallel(project: Path, iso: Env) -> None:
    """Four independent steps with max_parallel 2: each waits until the step of its pair has
    started (so a scheduler running them one at a time fails), and none sees three running."""
    state = iso.tmp / "state"
    for sub in ("started", "running", "seen"):
        (state / sub).mkdir(parents=True)
    write(project / "barrier.py", BARRIER)
    steps = "".join(
        f"  s{i}: {{script: barrier.py, args: [{json.dumps(str(state))}, s{i}]}}\n"
        for i in range(4)
    )
    spec = write(project / "pipeline.yaml", f"name: wide\nmax_parallel: 2\nsteps:\n{steps}")
    res = torchjob("run", str(spec))
    assert res.returncode == 0, res.stderr.decode()
    rec = _record(iso.runs, res)
    assert {s["status"] for s in rec["steps"].values()} == {"succeeded"}
    seen = [int(p.name.rsplit("-", 1)[1]) for p in (state / "seen").iterdir()]
    assert len(seen) == 4 and max(seen) <= 2
    runs = sorted((_run_record(s) for s in rec["steps"].values()), key=lambda r: r["started_at"])
    assert runs[1]["started_at"] < runs[0]["ended_at"]  # the first two overlapped
    for i in range(2, 4):  # a third never started before one of the first two ended
        assert runs[i]["started_at"] >= min(r["ended_at"] for r in runs[:i])


def test_order_and_outputs_reach_argv_byte_exact(project: Path, iso: Env) -> None:
    """An output parameter with spaces, quotes, `$()`, a backtick and a glob reaches the next
    step as one argv word, one param and one variable, unchanged; nothing is evaluated."""
    trap = iso.tmp / "pwned"
    value = f"a  b \"c\" 'd' $(touch {trap}) `touch {trap}` * ;|& \\n end"
    write(
        project / "make.py",
        "import os, pathlib, sys\n"
        "out = pathlib.Path(os.environ['TORCHJOB_OUTPUT_DIR'])\n"
        "(out / 'output_parameters').mkdir()\n"
        f"(out / 'output_parameters' / 'msg').write_text({value!r} + '\\n')\n"
        "(out / 'data.txt').write_text('payload')\n"
        "pathlib.Path(os.environ['TORCHJOB_MODEL_DIR'], 'm.bin').write_text('model')\n",
    )
    write(
        project / "use.py",
        "import json, os, pathlib, sys\n"
        "got = {'argv': sys.argv[1:], 'env': os.environ['MSG']}\n"
        "got['data'] = pathlib.Path(os.environ['DATA']).read_text()\n"
        "pathlib.Path(os.environ['TORCHJOB_OUTPUT_DIR'], 'got.json').write_text(json.dumps(got))\n",
    )
    spec = write(
        project / "pipeline.yaml",
        "steps:\n"
        "  use:\n"
        "    needs: [make]\n"
        "    script: use.py\n"
        '    args: ["${{ steps.make.outputs.msg }}", "${{ steps.make.run_dir }}"]\n'
        "    params: {msg: '${{ steps.make.outputs.msg }}',"
        " model: '${{ steps.make.model_dir }}/m.bin'}\n"
        "    env: {MSG: '<${{ steps.make.outputs.msg }}>',"
        " DATA: '${{ steps.make.output_dir }}/data.txt'}\n"
        "  make: {script: make.py}\n",
    )
    res = torchjob("run", str(spec))
    assert res.returncode == 0, res.stderr.decode()
    rec = _record(iso.runs, res)
    make, use = rec["steps"]["make"], rec["steps"]["use"]
    assert _run_record(use)["started_at"] >= _run_record(make)["ended_at"]
    got = json.loads((Path(use["run_dir"]) / "output" / "got.json").read_text())
    model = f"{make['run_dir']}/model/m.bin"
    assert got["argv"] == [value, make["run_dir"], "--msg", value, "--model", model]
    assert got["env"] == f"<{value}>"
    assert got["data"] == "payload"
    assert not trap.exists()


def test_a_failed_step_skips_its_downstream_and_others_finish(project: Path, iso: Env) -> None:
    log = iso.tmp / "log"
    spec = _pipeline(
        project,
        "name: mixed\nmax_parallel: 1\nsteps:\n"
        + _step("bad", log, "fail")
        + _step("after", log, needs=("bad",))
        + _step("later", log, needs=("after",))
        + _step("other", log),
    )
    res = torchjob("run", str(spec))
    assert res.returncode == 3, res.stderr.decode()
    steps = _record(iso.runs, res)["steps"]
    assert {n: s["status"] for n, s in steps.items()} == {
        "bad": "failed",
        "after": "skipped",
        "later": "skipped",
        "other": "succeeded",
    }
    assert sorted(log.read_text().split()) == ["bad", "other"]
    assert b"after skipped: needs bad, which ended failed" in res.stderr
    assert f"torchjob logs {_record(iso.runs, res)['id']}/bad".encode() in res.stderr


def test_fail_fast_stops_the_running_steps(project: Path, iso: Env) -> None:
    log = iso.tmp / "log"
    spec = _pipeline(
        project,
        "steps:\n"
        + _step("hangs", log, "hang")
        + "  bad:\n    script: gate.py\n    needs: []\n"
        + _step("never", log, needs=("bad",)),
    )
    pid_file = iso.tmp / "hangs.pid"
    write(  # fails only once the hanging step runs, so --fail-fast has something to stop
        project / "gate.py",
        f"import pathlib, sys, time\nwhile not pathlib.Path({str(pid_file)!r}).exists():\n"
        "    time.sleep(0.01)\nsys.exit(4)\n",
    )
    res = torchjob("run", str(spec), "--fail-fast", "--max-parallel", "2", timeout=60)
    assert res.returncode == 4, res.stderr.decode()
    steps = _record(iso.runs, res)["steps"]
    assert steps["bad"]["status"] == "failed"
    assert steps["hangs"]["status"] == "cancelled"
    assert steps["never"]["status"] in ("skipped", "cancelled")
    assert not alive(int(pid_file.read_text()))


def test_resume_reruns_only_what_did_not_succeed(project: Path, iso: Env) -> None:
    """A step that failed because a marker file was absent succeeds on --resume; the steps
    that succeeded do not run again: their run ids are reused and their outputs feed on."""
    log, marker = iso.tmp / "log", iso.tmp / "marker"
    write(
        project / "flaky.py",
        "import pathlib, sys\n"
        f"pathlib.Path({str(log)!r}).open('a').write('flaky\\n')\n"
        f"sys.exit(0 if pathlib.Path({str(marker)!r}).exists() else 5)\n",
    )
    spec = _pipeline(
        project,
        "name: again\nsteps:\n"
        + _step("first", log)
        + "  flaky: {script: flaky.py, needs: [first]}\n"
        + "  last:\n    script: step.py\n    needs: [flaky]\n"
        + f"    args: [last, {json.dumps(str(log))}, '${{{{ steps.first.outputs.who }}}}']\n",
    )
    res = torchjob("run", str(spec))
    assert res.returncode == 5
    failed = _pipelines(iso.runs)[-1]
    marker.touch()
    res = torchjob("run", str(spec), "--resume")
    assert res.returncode == 0, res.stderr.decode()
    resumed = _pipelines(iso.runs)[-1]
    assert resumed["resumed_from"] == failed["id"]
    first = resumed["steps"]["first"]
    assert first["run_id"] == failed["steps"]["first"]["run_id"]
    assert first["reused_from"] == failed["id"]
    assert log.read_text().split() == ["first", "flaky", "flaky", "last"]
    assert _run_record(resumed["steps"]["last"])["argv"][-1] == "first"
    res = torchjob("run", str(spec), "--from", "flaky")  # flaky and last again, not first
    assert res.returncode == 0, res.stderr.decode()
    assert log.read_text().split()[4:] == ["flaky", "last"]
    again = _pipelines(iso.runs)[-1]
    assert again["steps"]["first"]["run_id"] == first["run_id"]
    assert again["steps"]["flaky"]["run_id"] != resumed["steps"]["flaky"]["run_id"]
    assert again["outputs"] == {"who": "last"}  # the last step's output parameters
    res = torchjob("run", str(spec), "--resume")  # the newest, even within one second
    assert _pipelines(iso.runs)[-1]["resumed_from"] == again["id"]


def test_step_cache_reruns_exactly_what_an_input_change_reaches(project: Path, iso: Env) -> None:
    log = iso.tmp / "log"
    data = write(project / "data.txt", "one")
    write(
        project / "read.py",
        "import os, pathlib, sys\n"
        f"pathlib.Path({str(log)!r}).open('a').write(sys.argv[1] + '\\n')\n"
        "src = pathlib.Path(sys.argv[2]).read_text()\n"
        "pathlib.Path(os.environ['TORCHJOB_OUTPUT_DIR'], 'copy.txt').write_text(src)\n",
    )
    spec = _pipeline(
        project,
        "cache: true\nsteps:\n"
        "  prep: {script: read.py, args: [prep, '${{ inputs.data }}'],"
        " inputs: {data: data.txt}}\n"
        "  train: {script: read.py, needs: [prep],"
        " args: [train, '${{ steps.prep.output_dir }}/copy.txt']}\n" + _step("aside", log),
    )
    assert torchjob("run", str(spec)).returncode == 0
    assert sorted(log.read_text().split()) == ["aside", "prep", "train"]
    res = torchjob("run", str(spec))
    assert res.returncode == 0, res.stderr.decode()
    assert len(log.read_text().split()) == 3  # nothing ran
    second = _pipelines(iso.runs)[-1]["steps"]
    assert all(s["cached"] for s in second.values())
    assert b"prep cached" in res.stderr
    data.write_text("two")
    assert torchjob("run", str(spec)).returncode == 0
    assert sorted(log.read_text().split()[3:]) == ["prep", "train"]
    assert torchjob("run", str(spec), "--no-cache").returncode == 0
    assert sorted(log.read_text().split()[5:]) == ["aside", "prep", "train"]


def test_sigterm_mid_pipeline_stops_every_step_and_leaves_no_process(
    project: Path, iso: Env
) -> None:
    log = iso.tmp / "log"
    spec = _pipeline(
        project,
        "steps:\n"
        + _step("one", log, "hang")
        + _step("two", log, "hang")
        + _step("three", log, needs=("one",)),
    )
    proc = subprocess.Popen(
        [*TORCHJOB, "run", str(spec), "--max-parallel", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )

    def started() -> list[int] | None:
        found = [p.read_text() for p in iso.tmp.glob("*.pid")]
        return [int(x) for x in found] if len(found) == 2 and all(found) else None

    pids = wait_until(started, 60, "both steps to start")
    children = _descendants(proc.pid)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err.decode()
    assert gone_within([*pids, *children], 10)
    rec = _pipelines(iso.runs)[-1]
    assert rec["status"] == "cancelled"
    assert {n: s["status"] for n, s in rec["steps"].items()} == {
        "one": "cancelled",
        "two": "cancelled",
        "three": "cancelled",
    }
    assert all(_run_record(rec["steps"][n])["status"] == "cancelled" for n in ("one", "two"))


def _descendants(pid: int) -> list[int]:
    out: list[int] = []
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        out += [int(child), *_descendants(int(child))]
    return out


def test_a_steps_retries_are_its_runs_attempts(project: Path, iso: Env) -> None:
    count = iso.tmp / "count"
    write(
        project / "twice.py",
        f"import pathlib, sys\np = pathlib.Path({str(count)!r})\n"
        "n = int(p.read_text()) + 1 if p.exists() else 1\np.write_text(str(n))\n"
        "sys.exit(0 if n == 2 else 1)\n",
    )
    spec = write(project / "p.yaml", "steps:\n  t: {script: twice.py, retries: 2}\n")
    res = torchjob("run", str(spec))
    assert res.returncode == 0, res.stderr.decode()
    step = _record(iso.runs, res)["steps"]["t"]
    assert step["status"] == "succeeded" and len(step["attempts"]) == 1  # one run, two tries
    assert [a["status"] for a in _run_record(step)["attempts"]] == ["failed", "succeeded"]
    assert count.read_text() == "2"


def test_a_missing_output_fails_the_step_that_needs_it(project: Path, iso: Env) -> None:
    log = iso.tmp / "log"
    spec = _pipeline(
        project,
        "steps:\n"
        + _step("up", log)
        + "  down: {script: step.py, needs: [up], params: {x: '${{ steps.up.outputs.nope }}'}}\n",
    )
    res = torchjob("run", str(spec))
    assert res.returncode == 2, res.stderr.decode()
    down = _record(iso.runs, res)["steps"]["down"]
    assert down["status"] == "failed" and down["run_dir"] is None
    assert "step 'up' wrote no output 'nope'" in down["error"]
    assert b"wrote no output 'nope'" in res.stderr


BAD = [
    (
        "steps:\n  a: {script: s.py, needs: [b]}\n  bb: {script: s.py}\n",
        ":2: steps.a.needs: no step named 'b'",
    ),
    (
        "steps:\n  a: {script: s.py, needs: [c]}\n  c: {script: s.py, needs: [a]}\n",
        "a cycle: a → c → a",
    ),
    (
        "steps:\n  a: {script: s.py}\n"
        "  b: {script: s.py, params: {x: '${{ steps.a.output_dir }}'}}\n",
        "step 'a' is not upstream of 'b'; fix: add a to `needs` of b",
    ),
    ("steps:\n  a: {script: s.py, nedes: [x]}\n", "did you mean `steps.a.needs`?"),
    ("steps:\n  a: {script: s.py, args: ['${{ step.a }}']}\n", "not a reference torchjob knows"),
    ("steps:\n  a: {script: '${{ params.x }}'}\n", "steps.a.script: holds a reference"),
    ("steps: {}\n", "steps: no steps"),
    ("steps:\n  a: {script: s.py, retries: -1}\n", "steps.a.retries.count: bad value '-1'"),
    ("steps:\n  a: {script: s.py}\nmax_parallel: 0\n", "max_parallel: expected a whole number"),
    (
        "defaults: {timeout: soon}\nsteps:\n  a: {script: s.py}\n  b: {script: s.py}\n",
        ":1: defaults.timeout: bad duration",
    ),
]


@pytest.mark.parametrize(("text", "said"), BAD)
def test_a_bad_pipeline_exits_2_and_runs_nothing(
    project: Path, iso: Env, text: str, said: str
) -> None:
    write(project / "s.py", "raise SystemExit(7)\n")
    spec = write(project / "p.yaml", text)
    for command in (("run",), ("validate",)):
        res = torchjob(*command, str(spec))
        assert res.returncode == 2, res.stderr.decode()
        err = res.stderr.decode()
        assert said in err and err.count("torchjob: error:") == err.count("\n"), err
        assert "Traceback" not in err
    assert not iso.runs.exists() or not list(iso.runs.iterdir())


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (("-P", "lr=1"), "-P lr: the pipeline has no such param"),
        (("--from", "trian"), "did you mean `train`?"),
        (("--", "x"), "a pipeline has several"),
        (("--resume", "nothing-here"), "no run matches 'nothing-here'"),
    ],
)
def test_bad_pipeline_flags_exit_2(
    project: Path, iso: Env, args: tuple[str, ...], said: str
) -> None:
    write(project / "s.py", "")
    spec = write(project / "p.yaml", "params: {l: '1'}\nsteps:\n  train: {script: s.py}\n")
    res = torchjob("run", str(spec), *args)
    assert res.returncode == 2 and said in res.stderr.decode(), res.stderr.decode()


def test_runs_show_logs_and_cancel_know_pipelines(project: Path, iso: Env) -> None:
    log = iso.tmp / "log"
    spec = _pipeline(project, "name: pipe\nsteps:\n" + _step("a", log) + _step("b", log, "fail"))
    res = torchjob("run", str(spec))
    assert res.returncode == 3
    pipe = _record(iso.runs, res)
    table = torchjob("runs").stdout.decode().splitlines()
    assert len(table) == 2 and pipe["id"] in table[1] and "1 succeeded, 1 failed" in table[1]
    steps = torchjob("runs", "--pipeline", "pipe").stdout.decode()
    assert pipe["steps"]["a"]["run_id"] in steps and pipe["steps"]["b"]["run_id"] in steps
    shown = torchjob("show", pipe["id"]).stdout.decode()
    assert "failed" in shown and pipe["steps"]["b"]["run_id"] in shown
    as_json = json.loads(torchjob("show", "pipe", "--json").stdout)
    assert as_json["id"] == pipe["id"] and as_json["steps"]["b"]["exit_code"] == 3
    one = json.loads(torchjob("show", "pipe/a", "--json").stdout)
    assert one["id"] == pipe["steps"]["a"]["run_id"] and one["pipeline"]["step"] == "a"
    assert torchjob("logs", f"{pipe['id']}/b").returncode == 0
    both = torchjob("logs", "pipe").stdout.decode()
    assert f"==> a ({pipe['steps']['a']['run_id']}) <==" in both
    by_id = torchjob("show", pipe["steps"]["b"]["run_id"], "--json")
    assert json.loads(by_id.stdout)["exit_code"] == 3
    res = torchjob("cancel", "pipe")
    assert res.returncode == 2 and b"not running" in res.stderr
    res = torchjob("show", "pipe/c")
    assert res.returncode == 2 and b"has no step 'c'" in res.stderr


def test_inputs_pass_as_options_and_references_in_single_jobs(project: Path, iso: Env) -> None:
    write(project / "data" / "train.csv", "x")
    write(
        project / "job.py",
        "import os, sys\nprint(sys.argv[1:], os.environ['WHERE'])\n",
    )
    spec = write(
        project / "job.yaml",
        "script: job.py\n"
        "inputs: {train: {path: data/train.csv, arg: --train}}\n"
        "params: {copy: '${{ inputs.train }}', lr: '0.1'}\n"
        "env: {WHERE: 'lr=${{ params.lr }}'}\n",
    )
    res = torchjob("run", str(spec))
    assert res.returncode == 0, res.stderr.decode()
    path = str(project / "data" / "train.csv")
    expected = f"{['--copy', path, '--lr', '0.1', '--train', path]} lr=0.1"
    assert expected in res.stdout.decode()
    bad = write(project / "bad.yaml", "script: job.py\nparams: {x: '${{ steps.a.run_dir }}'}\n")
    res = torchjob("run", str(bad))
    assert res.returncode == 2 and b"names a step, but this spec is not a pipeline" in res.stderr


def test_a_terminal_shows_a_live_table_and_ctrl_c_stops_every_step(project: Path, iso: Env) -> None:
    """At a real terminal: a line per step, the live table (running steps, counts) redrawn in
    place, the steps' output prefixed with --follow-steps; Ctrl-C stops both running steps
    (each records `cancelled`) and the pipeline exits 130."""
    log = iso.tmp / "log"
    spec = _pipeline(project, "steps:\n" + _step("one", log, "hang") + _step("two", log, "hang"))
    term = Terminal(["run", str(spec), "--follow-steps"], os.environ)
    term.expect(b"2 running")  # the table's counts line
    shown = term.expect(b"\x1b[J")  # the table is erased before it is drawn again
    assert b"\xe2\xa0" in shown  # a spinner frame of the running steps' rows
    wait_until(lambda: len(list(iso.tmp.glob("*.pid"))) == 2, 60, "both steps to start")
    pids = [int(p.read_text()) for p in iso.tmp.glob("*.pid")]
    term.send(b"\x03")
    term.expect(b"stopping every running step (SIGINT)")
    assert term.wait() == 128 + signal.SIGINT
    assert gone_within(pids, 10)
    steps = _pipelines(iso.runs)[-1]["steps"]
    assert {s["status"] for s in steps.values()} == {"cancelled"}


def test_follow_steps_prefixes_each_line_with_its_step(project: Path, iso: Env) -> None:
    """Each line after its step's name, a last line without its newline too (the next line
    is another step's or torchjob's); `logs PIPELINE` starts each step's header on a line of
    its own after a log that ended inside one."""
    write(
        project / "say.py", "import sys\nprint('hello from', sys.argv[1])\nprint('end', end='')\n"
    )
    write(project / "err.py", "import sys\nprint('oops', file=sys.stderr)\n")
    spec = write(
        project / "p.yaml",
        "steps:\n  a: {script: say.py, args: [a]}\n  b: {script: err.py, needs: [a]}\n",
    )
    res = torchjob("run", str(spec), "--follow-steps")
    assert res.returncode == 0, res.stderr.decode()
    assert res.stdout == b"a | hello from a\na | end\n"
    assert b"b | oops\n" in res.stderr and b"\x1b[" not in res.stderr  # no table in a pipe
    quiet = torchjob("run", str(spec))
    assert quiet.stdout == b""  # the steps' output is in their logs only
    shown = torchjob("logs", "last").stdout  # the newest pipeline, the one just run
    assert shown.startswith(b"==> a (") and b"hello from a\nend\n==> b (" in shown


def test_dry_run_and_validate_list_the_steps_and_run_nothing(project: Path, iso: Env) -> None:
    write(project / "s.py", "")
    spec = write(
        project / "p.yaml",
        "steps:\n  b: {script: s.py, needs: [a], params: {x: '${{ steps.a.run_dir }}'}}\n"
        "  a: {script: s.py, retries: 1}\n",
    )
    res = torchjob("run", str(spec), "--dry-run")
    assert res.returncode == 0, res.stderr.decode()
    out = res.stdout.decode()
    assert out.index("step a") < out.index("step b") and "--x '${{ steps.a.run_dir }}'" in out
    res = torchjob("validate", str(spec))
    assert res.returncode == 0 and b"2 steps: a \xe2\x86\x92 b" in res.stdout
    assert not iso.runs.exists() or not list(iso.runs.iterdir())


def test_a_step_timeout_ends_that_step_as_a_timeout(project: Path, iso: Env) -> None:
    log = iso.tmp / "log"
    spec = _pipeline(
        project,
        "steps:\n  slow:\n    script: step.py\n    timeout: 1s\n    grace: 1s\n"
        f"    args: [slow, {json.dumps(str(log))}, hang]\n" + _step("next", log, needs=("slow",)),
    )
    res = torchjob("run", str(spec))
    assert res.returncode == 124, res.stderr.decode()
    steps = _record(iso.runs, res)["steps"]
    assert (steps["slow"]["status"], steps["next"]["status"]) == ("timeout", "skipped")


def test_cancel_stops_a_running_pipeline_by_its_name(project: Path, iso: Env) -> None:
    log = iso.tmp / "log"
    spec = _pipeline(project, "name: longrun\nsteps:\n" + _step("wait", log, "hang"))
    proc = subprocess.Popen(
        [*TORCHJOB, "run", str(spec)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    pid_file = iso.tmp / "wait.pid"
    wait_until(lambda: pid_file.exists() and pid_file.read_text(), 60, "the step to start")
    res = torchjob("cancel", "longrun")
    assert res.returncode == 0 and b"stopping pipeline" in res.stdout, res.stderr
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err.decode()
    assert not alive(int(pid_file.read_text()))
    shown = json.loads(torchjob("show", "longrun", "--json").stdout)
    assert shown["status"] == "cancelled" and shown["steps"]["wait"]["status"] == "cancelled"
