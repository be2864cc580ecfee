"""`torchjob rerun` with real runs: the same spec at the same git commit after the branch moved
on, flags over it, and secrets that run.json masked asked for again rather than run as `****`."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers import Env, newest_record, torchjob, write
from tests.servers import make_bare_repo

MAIN = (
    "import os, sys\n"
    "here = os.path.dirname(os.path.abspath(__file__))\n"
    "print('v', open(os.path.join(here, 'version.txt')).read().strip(), sys.argv[1:], "
    "os.environ.get('HF_TOKEN', '-'))\n"
)


def test_rerun_runs_the_same_commit_after_the_branch_moved(tmp_path: Path, iso: Env) -> None:
    repo = tmp_path / "repo.git"
    shas = make_bare_repo(repo, [{"main.py": MAIN, "version.txt": "1"}])
    res = torchjob(
        "run", "-s", "main.py", "-p", f"file://{repo}", "--allow-insecure-source",
        "-r", "main", "-P", "lr=0.1",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    first = newest_record(iso.runs)
    make_bare_repo(repo, [{"main.py": MAIN, "version.txt": "1"}, {"version.txt": "2"}])
    res = torchjob("rerun", first["id"], "-P", "lr=0.5")
    assert res.returncode == 0, res.stderr
    assert b"v 1 ['--lr', '0.5'] -" in res.stdout  # the old commit, the new param
    assert f"rerunning {first['id']} at commit {shas[0]}".encode() in res.stderr
    again = newest_record(iso.runs)
    assert again["source"]["commit"] == shas[0] == first["source"]["commit"]
    assert again["spec"]["script"] == "main.py" and again["name"] == first["name"]
    res = torchjob("run", "-s", "main.py", "-p", f"file://{repo}", "--allow-insecure-source")
    assert b"v 2" in res.stdout  # the branch did move: the rerun's v 1 is its pinned commit


def test_a_masked_secret_must_be_given_again(project: Path, iso: Env) -> None:
    write(
        project / "main.py", MAIN.replace("open(os.path.join(here, 'version.txt')).read()", "'x'")
    )
    res = torchjob("run", "-s", "main.py", "-E", "HF_TOKEN=hf_secret123", cwd=project)
    assert res.returncode == 0, res.stderr
    rec = newest_record(iso.runs)
    assert rec["spec"]["env"]["HF_TOKEN"] == "****"
    res = torchjob("rerun", rec["id"])
    assert res.returncode == 2 and b"recorded env.HF_TOKEN masked" in res.stderr
    assert len(list(iso.runs.glob("*/run.json"))) == 1  # nothing ran
    res = torchjob("rerun", rec["id"], "-E", "HF_TOKEN=hf_other456")
    assert res.returncode == 0, res.stderr
    assert b"hf_other456" in res.stdout
    rows = json.loads(torchjob("runs", "--json").stdout)
    assert len(rows) == 2 and rows[0]["name"] == rows[1]["name"]


def test_rerun_of_a_pipeline_step_writes_in_its_own_run(project: Path, iso: Env) -> None:
    """A step's relative output folder is inside its run folder; its rerun, a single run, gets
    its own (it wrote into the old run's folder), and the pipeline itself is no run to rerun."""
    write(
        project / "out.py",
        "import os, pathlib\nout = pathlib.Path(os.environ['TORCHJOB_OUTPUT_DIR'])\n"
        "out.mkdir(parents=True, exist_ok=True)\n(out / 'n').write_text('x')\nprint(out)\n",
    )
    spec = write(
        project / "pp.yaml",
        "name: pp\nsteps:\n  a: {script: out.py, outputs: {output_dir: data}}\n",
    )
    assert torchjob("run", str(spec)).returncode == 0
    res = torchjob("rerun", "pp/a")
    assert res.returncode == 0, res.stderr
    new = json.loads(torchjob("show", "--json").stdout)
    assert Path(new["output_dir"]).is_relative_to(iso.runs / new["id"]), new["output_dir"]
    assert res.stdout.decode().strip() == new["output_dir"]
    refused = torchjob("rerun", "pp")
    assert refused.returncode == 2 and b"is a pipeline" in refused.stderr
