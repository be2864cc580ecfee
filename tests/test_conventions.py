"""The ML job conventions: hyperparameters, input channels, model and output folders, output
parameters, resume, and scripts written for SageMaker or Tencent TI run unchanged."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.helpers import Env, torchjob, write

DUMP_ENV = (
    "import json, os\n"
    "keys = sorted(k for k in os.environ if k.startswith(('TORCHJOB_', 'SM_', 'TM_')))\n"
    "print(json.dumps({k: os.environ[k] for k in keys}))\n"
)


def job_env(res_stdout: bytes) -> dict[str, str]:
    env: dict[str, str] = json.loads(res_stdout)
    return env


def test_params_channels_and_folders(project: Path, iso: Env) -> None:
    write(project / "main.py", DUMP_ENV)
    data = iso.tmp / "data"
    write(data / "x.bin", "x")
    spec = write(
        project / "job.yaml",
        (
            f"script: main.py\nparams: {{lr: 0.1, dry-run: true, quiet: false}}\n"
            f"inputs: {{train: {data}}}\n"
        ),
    )
    res = torchjob("run", str(spec), "--input", f"test={data / 'x.bin'}")
    assert res.returncode == 0, res.stderr
    env = job_env(res.stdout)
    run_dir, rec = iso.only_run()
    assert json.loads(env["TORCHJOB_PARAMS"]) == {"lr": "0.1", "dry-run": True}
    assert env["TORCHJOB_CHANNEL_TRAIN"] == str(data)
    assert env["TORCHJOB_CHANNEL_TEST"] == str(data / "x.bin")
    assert env["TORCHJOB_MODEL_DIR"] == str(run_dir / "model") == rec["model_dir"]
    assert env["TORCHJOB_OUTPUT_DIR"] == str(run_dir / "output") == rec["output_dir"]
    assert env["TORCHJOB_NUM_GPUS"] == "0"
    assert (run_dir / "model").is_dir() and (run_dir / "output").is_dir()


def test_missing_channel_and_placed_outputs(project: Path, iso: Env) -> None:
    write(project / "main.py", DUMP_ENV)
    res = torchjob("run", "-s", "main.py", "-p", str(project), "--input", "train=/no/such")
    assert res.returncode == 2 and b"inputs.train" in res.stderr and not iso.runs.exists()
    spec = write(project / "job.yaml", "script: main.py\noutputs: {model_dir: ../models}\n")
    res = torchjob("run", str(spec), env={**os.environ, "CUDA_VISIBLE_DEVICES": "0,1"})
    env = job_env(res.stdout)
    assert Path(env["TORCHJOB_MODEL_DIR"]).resolve() == (project.parent / "models").resolve()
    assert (project.parent / "models").is_dir()
    assert env["TORCHJOB_NUM_GPUS"] == "2"


def test_output_parameters_reach_the_record_summary_and_table(project: Path, iso: Env) -> None:
    write(
        project / "main.py",
        (
            "import json, os, pathlib\n"
            "out = pathlib.Path(os.environ['TORCHJOB_OUTPUT_DIR'])\n"
            "(out / 'metrics.json').write_text(json.dumps({'accuracy': 0.93, 'loss': 0.21}))\n"
            "(out / 'output_parameters').mkdir()\n"
            "(out / 'output_parameters' / 'best_epoch').write_text('3\\n')\n"
        ),
    )
    res = torchjob("run", "-s", "main.py", "-p", str(project))
    assert res.returncode == 0, res.stderr
    _, rec = iso.only_run()
    assert rec["outputs"] == {"accuracy": 0.93, "loss": 0.21, "best_epoch": 3}
    assert b"accuracy=0.93 loss=0.21 best_epoch=3" in res.stderr
    table = torchjob("runs", "--columns", "accuracy,loss").stdout.decode().splitlines()
    assert table[0].split()[-2:] == ["ACCURACY", "LOSS"]
    assert table[1].split()[-2:] == ["0.93", "0.21"]


def test_resume_last_uses_the_previous_runs_checkpoint(project: Path, iso: Env) -> None:
    write(
        project / "train.py",
        (
            "import os, pathlib\n"
            "resume = os.environ.get('TORCHJOB_RESUME_FROM')\n"
            "print('resume', resume)\n"
            "pathlib.Path(os.environ['TORCHJOB_MODEL_DIR'], 'checkpoint.pt').write_text('w')\n"
        ),
    )
    res = torchjob("run", "-s", "train.py", "-p", str(project), "--resume", "last")
    assert res.returncode == 2 and b"no earlier run named 'train'" in res.stderr
    assert torchjob("run", "-s", "train.py", "-p", str(project)).returncode == 0
    first = iso.run_dirs()[0]
    res = torchjob("run", "-s", "train.py", "-p", str(project), "--resume", "last")
    assert res.returncode == 0
    assert res.stdout == f"resume {first / 'model' / 'checkpoint.pt'}\n".encode()
    ckpt = write(iso.tmp / "given.pt", "w")
    spec = write(project / "job.yaml", f"script: train.py\nresume_from: {ckpt}\n")
    res = torchjob("run", str(spec))
    assert res.stdout == f"resume {ckpt}\n".encode()


SAGEMAKER_SCRIPT = """
import argparse, json, os
parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=1)
parser.add_argument("--model-dir", type=str, default=os.environ["SM_MODEL_DIR"])
parser.add_argument("--train", type=str, default=os.environ["SM_CHANNEL_TRAIN"])
args, _ = parser.parse_known_args()
hps = json.loads(os.environ["SM_HPS"])
with open(os.path.join(args.model_dir, "model.txt"), "w") as f:
    f.write(f"{args.epochs} {hps['epochs']} {os.listdir(args.train)} "
            f"{json.loads(os.environ['SM_CHANNELS'])} {os.environ['SM_NUM_GPUS']} "
            f"{os.environ['SM_HP_EPOCHS']} {os.environ['SM_HP_OPTIM_LR']}")
with open(os.path.join(os.environ["SM_OUTPUT_DATA_DIR"], "metrics.json"), "w") as f:
    json.dump({"epochs_done": args.epochs}, f)
"""

TI_SCRIPT = """
import os
with open(os.path.join(os.environ["TM_MODEL_DIR"], "model.txt"), "w") as f:
    f.write(f"{sorted(os.listdir(os.environ['TM_CHANNEL_TRAIN']))} {os.environ['TM_NUM_GPUS']}")
open(os.path.join(os.environ["TM_OUTPUT_DATA_DIR"], "done"), "w").close()
"""


def test_sagemaker_and_ti_scripts_run_unchanged(project: Path, iso: Env) -> None:
    data = iso.tmp / "train"
    write(data / "a.csv", "1")
    write(project / "sm.py", SAGEMAKER_SCRIPT)
    write(project / "ti.py", TI_SCRIPT)
    res = torchjob(
        "run",
        "-s",
        "sm.py",
        "-p",
        str(project),
        "--compat",
        "sagemaker",
        "--input",
        f"train={data}",
        "-P",
        "epochs=2",
        "-P",
        "optim.lr=0.1",
    )
    assert res.returncode == 0, res.stderr
    run_dir = max(iso.run_dirs())
    # optim.lr: a shell name too (a Slurm batch script exports it)
    assert (run_dir / "model" / "model.txt").read_text() == "2 2 ['a.csv'] ['train'] 0 2 0.1"
    assert json.loads((run_dir / "run.json").read_text())["outputs"] == {"epochs_done": 2}
    res = torchjob(
        "run", "-s", "ti.py", "-p", str(project), "--compat", "ti", "--input", f"train={data}"
    )
    assert res.returncode == 0, res.stderr
    ti_dir = next(d for d in iso.run_dirs() if d != run_dir)
    assert (ti_dir / "model" / "model.txt").read_text() == "['a.csv'] 0"
    assert (ti_dir / "output" / "done").exists()
    res = torchjob("run", "-s", "ti.py", "-p", str(project), "--compat", "azure")
    assert res.returncode == 2 and b"unknown compat" in res.stderr
