"""Scripts written the way Azure ML, Tencent TI / SageMaker and DolphinScheduler users write
them, run unchanged: Azure's script_params keys with their dashes, TI's `--tied True` booleans
(param_style: value, the default under compat ti/sagemaker), and DolphinScheduler's
`interpreter: ${PYTHON_LAUNCHER}`."""

from __future__ import annotations

import json
import os
import sys
import zipfile
from pathlib import Path

from tests.helpers import ROOT, Env, torchjob, write

AZURE = """
import argparse
p = argparse.ArgumentParser()
p.add_argument("--epochs", type=int)
p.add_argument("-v", action="store_true")
a = p.parse_args()
print("epochs", a.epochs, "verbose", a.v)
"""

# TI's and SageMaker's demos read booleans as text: `--tied True`.
TI = """
import argparse
def str2bool(text):
    return text.lower() in ("true", "1", "yes")
p = argparse.ArgumentParser()
p.add_argument("--tied", type=str2bool, default=False)
p.add_argument("--dropout", type=str2bool, default=True)
p.add_argument("--lr", type=float)
a = p.parse_args()
print("tied", a.tied, "dropout", a.dropout, "lr", a.lr)
"""


def test_azure_script_params_keep_their_dashes(project: Path, iso: Env) -> None:
    write(project / "train.py", AZURE)
    spec = write(project / "job.yaml", "script: train.py\nparams: {'--epochs': 2, '-v': true}\n")
    res = torchjob("run", str(spec))
    assert (res.returncode, res.stdout) == (0, b"epochs 2 verbose True\n"), res.stderr
    res = torchjob("run", str(spec), "-P", "--epochs=5")
    assert res.stdout == b"epochs 5 verbose True\n", res.stderr
    rec = json.loads(torchjob("show", "--json").stdout)
    assert rec["params"] == {"--epochs": "5", "-v": True}
    bad = write(project / "bad.yaml", "script: train.py\nparams: {'---x': 1}\n")
    res = torchjob("run", str(bad))
    assert res.returncode == 2 and f"{bad}:2: params".encode() in res.stderr


def test_ti_booleans_are_passed_as_values(project: Path, iso: Env) -> None:
    write(project / "ti.py", TI)
    spec = write(
        project / "job.yaml",
        "script: ti.py\ncompat: ti\nparams: {tied: true, dropout: false, lr: 0.1}\n",
    )
    res = torchjob("run", str(spec))
    assert res.stdout == b"tied True dropout False lr 0.1\n", res.stderr
    assert json.loads(torchjob("show", "--json").stdout)["argv"][-6:] == [
        "--tied", "True", "--dropout", "False", "--lr", "0.1",
    ]  # fmt: skip
    flags = torchjob("run", str(spec), "--param-style", "flag")  # the bare-flag style
    assert flags.returncode == 2 and b"--tied: expected one argument" in flags.stderr
    plain = write(project / "plain.yaml", "script: ti.py\nparams: {tied: true}\n")
    res = torchjob("run", str(plain), "--param-style", "value")
    assert res.stdout == b"tied True dropout True lr None\n", res.stderr
    write(
        project / "sm.py", "import os\nprint(os.environ['SM_HPS'], os.environ['SM_HP_DROPOUT'])\n"
    )
    sm = write(project / "sm.yaml", "script: sm.py\ncompat: sagemaker\nparams: {dropout: false}\n")
    res = torchjob("run", str(sm))  # false is a value here: in the JSON and the variables too
    assert res.stdout == b'{"dropout": false} false\n', res.stderr
    bad = torchjob("run", str(plain), "--param-style", "words")
    assert bad.returncode == 2 and b"unknown param_style 'words'" in bad.stderr


def test_dolphinscheduler_interpreter_variable_is_expanded(project: Path, iso: Env) -> None:
    write(project / "main.py", "import sys\nprint(sys.executable)\n")
    spec = write(project / "job.yaml", "script: main.py\npython: {interpreter: '${MY_PY}'}\n")
    env = {"MY_PY": sys.executable, "PATH": "/usr/bin:/bin"}
    res = torchjob("run", str(spec), env={**_base(), **env})
    assert (res.returncode, res.stdout.decode().strip()) == (0, sys.executable), res.stderr
    short = write(project / "short.yaml", "script: main.py\npython: {interpreter: $MY_PY}\n")
    res = torchjob("run", str(short), env={**_base(), **env})
    assert res.returncode == 0, res.stderr
    before = len(list(iso.runs.glob("*/run.json")))
    res = torchjob("run", str(spec), env=_base())
    err = res.stderr.decode()
    assert res.returncode == 2 and f"{spec}:2: python.interpreter: $MY_PY is not set" in err
    assert len(list(iso.runs.glob("*/run.json"))) == before  # nothing ran


def _base() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "MY_PY"}


PAI = """
import json, os
print(sorted(json.loads(os.environ["PAI_HPS"]).items()))
print(os.environ["PAI_USER_ARGS"])
print(open(os.environ["PAI_INPUT_TRAIN"]).read().strip())
print(os.environ["PAI_OUTPUT_MODEL"] == os.environ["TORCHJOB_MODEL_DIR"])
print(os.environ["PAI_HPS_BATCH_SIZE"], os.path.isdir(os.environ["PAI_OUTPUT_TENSORBOARD"]))
"""


def test_pai_variables_and_the_pai_and_ti_examples(project: Path, iso: Env) -> None:
    write(project / "pai.py", PAI)
    write(project / "data.csv", "a,b\n")
    res = torchjob(
        "run", "-s", "pai.py", "-p", str(project), "--compat", "pai",
        "-P", "batch-size=32", "-P", "lr=0.1", "--input", f"train={project / 'data.csv'}",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert res.stdout.decode().splitlines() == [
        "[('batch-size', '32'), ('lr', '0.1')]",
        "--batch-size 32 --lr 0.1",
        "a,b",
        "True",
        "32 True",
    ]
    res = torchjob("run", str(ROOT / "examples" / "pai" / "job.yaml"))
    assert res.returncode == 0, res.stderr
    rec = json.loads(torchjob("show", "--json").stdout)
    assert float(rec["outputs"]["test-accuracy"]) > 0.8
    config = Path(rec["run_dir"] if "run_dir" in rec else iso.runs / rec["id"]) / "config"
    assert json.loads((config / "hyperparameters.json").read_text()) == {
        "seed": "0",
        "test_fraction": "0.2",
    }
    assert (Path(rec["model_dir"]) / "centroids.json").is_file()
    assert (config / "hyperparameters.json").stat().st_mode & 0o777 == 0o600  # secrets too
    res = torchjob("run", str(ROOT / "examples" / "ti" / "job.yaml"))
    assert res.returncode == 0 and b"standardize=True: test accuracy" in res.stdout, res.stderr
    argv = json.loads(torchjob("show", "--json").stdout)["argv"]
    assert argv[-4:] == ["--standardize", "True", "--epochs", "1"]


def test_tencent_dependency_zip_is_unpacked_beside_the_script(project: Path, iso: Env) -> None:
    """Tencent Cloud's PyTorch component: a dependency zip whose content lands beside the
    script (`files: [{path: deps.zip, unpack: true}]`, or `--file deps.zip:unpack`), with the
    archive project's safety rules."""
    deps = iso.tmp / "deps.zip"
    with zipfile.ZipFile(deps, "w") as zf:
        zf.writestr("helpers/__init__.py", "GREETING = 'hello from the zip'\n")
        zf.writestr("settings.json", '{"lr": 0.1}')
    write(
        project / "main.py",
        "import json, helpers\nprint(helpers.GREETING, json.load(open('settings.json')))\n",
    )
    spec = write(
        project / "job.yaml", f"script: main.py\nfiles: [{{path: '{deps}', unpack: true}}]\n"
    )
    res = torchjob("run", str(spec))
    assert res.stdout == b"hello from the zip {'lr': 0.1}\n", res.stderr
    assert not (project / "helpers").exists()  # the user's folder is left alone
    flag = torchjob("run", "-s", "main.py", "-p", str(project), "--file", f"{deps}:unpack")
    assert flag.stdout == res.stdout, flag.stderr
    assert json.loads(torchjob("show", "--json").stdout)["spec"]["files"] == [f"{deps}:unpack"]
    again = torchjob("rerun", "last")  # the record keeps the unpacking
    assert again.stdout == res.stdout, again.stderr
    inside = torchjob(  # a runs folder inside the project is not copied into its own run
        "run", "-s", "main.py", "-p", str(project), "--file", str(deps), "--runs-dir",
        str(project / "runs"), "--", "x",
    )  # fmt: skip
    assert inside.returncode != 125 and not list((project / "runs").glob("*/src/runs"))
    evil = iso.tmp / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../outside.py", "x = 1\n")
    bad = torchjob("run", "-s", "main.py", "-p", str(project), "--file", f"{evil}:unpack")
    assert bad.returncode == 125 and not (iso.tmp / "outside.py").exists(), bad.stderr
    wrong = write(project / "w.yaml", "script: main.py\nfiles: [{path: x.zip, open: true}]\n")
    res = torchjob("run", str(wrong))
    assert res.returncode == 2 and f"{wrong}:2: files: an entry is a path".encode() in res.stderr
