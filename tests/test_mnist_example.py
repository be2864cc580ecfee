"""examples/mnist: its IDX loader on tiny files written here, a dry run through torchjob, and
(slow) one real epoch reaching 90% test accuracy and a resume from a checkpoint."""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import struct
import subprocess
import sys
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.helpers import Env, torchjob

with warnings.catch_warnings():  # torch warns at import when numpy is missing; none is needed
    warnings.filterwarnings("ignore", message="Failed to initialize NumPy")
    import torch

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "mnist"
PYTHON = sys.executable  # the interpreter torchjob runs job.yaml with: it has torch


def load_idx_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mnist_idx", EXAMPLE / "idx.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


idx = load_idx_module()


def images_bytes(count: int, rows: int = 28, cols: int = 28, magic: int = 2051) -> bytes:
    """An IDX image file: image i has every pixel at i * 50 (0, 50, 100, ...), pixel 0 at 255."""
    header = struct.pack(">IIII", magic, count, rows, cols)
    body = bytearray()
    for i in range(count):
        image = bytearray([(i * 50) % 256] * (rows * cols))
        image[0] = 255
        body += image
    return header + bytes(body)


def labels_bytes(values: list[int], magic: int = 2049) -> bytes:
    return struct.pack(">II", magic, len(values)) + bytes(values)


def write_split(folder: Path, images: bytes, labels: bytes, gz: bool, split: str = "train") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in zip(idx.FILES[split], (images, labels), strict=True):
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)


@pytest.mark.parametrize("gz", [True, False], ids=["gzipped", "raw"])
def test_idx_reads_gzipped_and_raw_files(tmp_path: Path, gz: bool) -> None:
    write_split(tmp_path, images_bytes(3), labels_bytes([7, 0, 9]), gz)
    images, labels = idx.load_split(tmp_path, "train")
    assert images.shape == (3, 1, 28, 28) and images.dtype == torch.float32
    assert labels.dtype == torch.int64 and labels.tolist() == [7, 0, 9]
    # Normalised like the PyTorch example: (x / 255 - 0.1307) / 0.3081.
    assert images[0, 0, 0, 0].item() == pytest.approx((1 - 0.1307) / 0.3081, abs=1e-5)
    assert images[0, 0, 5, 5].item() == pytest.approx(-0.1307 / 0.3081, abs=1e-5)
    assert images[2, 0, 5, 5].item() == pytest.approx((100 / 255 - 0.1307) / 0.3081, abs=1e-5)
    raw, _ = idx.load_split(tmp_path, "train", normalize=False)
    assert raw.min().item() == 0.0 and raw.max().item() == 1.0


def test_idx_detects_gzip_by_content_not_by_name(tmp_path: Path) -> None:
    """A raw file named .gz and a gzipped file without .gz both read: the magic bytes decide."""
    images_name, labels_name = idx.FILES["test"]
    (tmp_path / f"{images_name}.gz").write_bytes(images_bytes(2))
    (tmp_path / labels_name).write_bytes(gzip.compress(labels_bytes([1, 2])))
    images, labels = idx.load_split(tmp_path, "test")
    assert images.shape == (2, 1, 28, 28) and labels.tolist() == [1, 2]


def test_idx_wrong_magic_number(tmp_path: Path) -> None:
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(labels_bytes([1, 2, 3]))  # a labels file where images belong
    with pytest.raises(ValueError, match=r"wrong magic number 2049 \(labels\), expected 2051"):
        idx.load_images(path)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    with pytest.raises(ValueError, match=r"wrong magic number \d+, expected 2051") as err:
        idx.load_images(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("gz", [True, False], ids=["gzipped", "raw"])
def test_idx_truncated_file(tmp_path: Path, gz: bool) -> None:
    data = images_bytes(3)[:-100]  # the last image is short of 100 pixels
    path = tmp_path / "images"
    path.write_bytes(gzip.compress(data) if gz else data)
    with pytest.raises(
        ValueError,
        match=r"truncated IDX file: 2268 bytes, expected 2368 for "
        r"dimensions 3 x 28 x 28",
    ):
        idx.load_images(path)


def test_idx_truncated_gzip_stream_and_header(tmp_path: Path) -> None:
    path = tmp_path / "images.gz"
    path.write_bytes(gzip.compress(images_bytes(3))[:-40])
    with pytest.raises(ValueError, match="truncated gzip file"):
        idx.load_images(path)
    path.write_bytes(images_bytes(3)[:10])  # magic and half the dimensions
    with pytest.raises(ValueError, match="truncated IDX file: 10 bytes, the header alone takes 16"):
        idx.load_images(path)
    path.write_bytes(b"\x00\x00")
    with pytest.raises(ValueError, match="no complete header"):
        idx.load_images(path)


def test_idx_extra_bytes_and_wrong_shapes(tmp_path: Path) -> None:
    path = tmp_path / "images"
    path.write_bytes(images_bytes(2) + b"\x00" * 5)
    with pytest.raises(ValueError, match="5 bytes more than its dimensions"):
        idx.load_images(path)
    path.write_bytes(images_bytes(2, rows=27, cols=27))
    with pytest.raises(ValueError, match="images of 27 x 27 pixels, expected 28 x 28"):
        idx.load_images(path)
    labels = tmp_path / "labels"
    labels.write_bytes(labels_bytes([3, 10]))
    with pytest.raises(ValueError, match="label 10 is not a digit"):
        idx.load_labels(labels)


def test_idx_count_mismatch(tmp_path: Path) -> None:
    write_split(tmp_path, images_bytes(3), labels_bytes([1, 2]), gz=True)
    with pytest.raises(
        ValueError,
        match=r"3 images in train-images-idx3-ubyte.gz but 2 labels "
        r"in train-labels-idx1-ubyte.gz",
    ):
        idx.load_split(tmp_path, "train")


def test_idx_missing_file_names_the_expected_names(tmp_path: Path) -> None:
    with pytest.raises(
        FileNotFoundError,
        match=r"no train-images-idx3-ubyte or "
        r"train-images-idx3-ubyte.gz",
    ):
        idx.load_split(tmp_path, "train")


def test_idx_reads_the_shipped_data() -> None:
    images, labels = idx.load_split(EXAMPLE / "data", "train")
    assert images.shape == (4000, 1, 28, 28) and labels.shape == (4000,)
    test_images, test_labels = idx.load_split(EXAMPLE / "data", "test")
    assert test_images.shape == (1000, 1, 28, 28) and test_labels.shape == (1000,)
    counts = torch.bincount(torch.cat([labels, test_labels]), minlength=10)
    assert counts.tolist() == [500] * 10  # the README's 500 digits per class
    # The normalisation constants are MNIST's: these digits come out near mean 0, std 1.
    assert abs(images.mean().item()) < 0.1 and abs(images.std().item() - 1) < 0.1


def test_main_reports_a_damaged_data_folder(tmp_path: Path) -> None:
    write_split(tmp_path / "d", images_bytes(3), labels_bytes([1, 2]), gz=False)
    write_split(tmp_path / "d", images_bytes(1), labels_bytes([1]), gz=False, split="test")
    done = subprocess.run(
        [PYTHON, str(EXAMPLE / "main.py"), "--data-dir", str(tmp_path / "d")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert "cannot read MNIST" in done.stderr and "3 images" in done.stderr


def test_specs_are_valid() -> None:
    for name in ("job.yaml", "job-venv.yaml", "job-git.yaml", "job-ddp.yaml", "job-slurm.yaml"):
        done = torchjob("validate", str(EXAMPLE / name))
        assert done.returncode == 0, (name, done.stderr.decode())
        assert b"ok: " in done.stdout
    assert "torch==2.13.0" in (EXAMPLE / "requirements.txt").read_text().splitlines()


def test_dry_run_through_torchjob(iso: Env) -> None:
    done = torchjob("run", str(EXAMPLE / "job.yaml"), "-P", "dry-run=true", cwd=iso.tmp)
    assert done.returncode == 0, done.stderr.decode()
    run_dir, record = iso.only_run()
    assert record["status"] == "succeeded"
    log = (run_dir / "stdout.log").read_text()
    assert "Train Epoch: 1 [0/4000 (0%)]\tLoss: " in log
    assert "Train Epoch: 1 [640/4000" not in log  # one batch only
    assert "Test set: Average loss: " in log and "/1000 (" in log
    metrics = json.loads((run_dir / "output" / "metrics.json").read_text())
    assert set(metrics) == {"accuracy", "loss"} and 0 <= metrics["accuracy"] <= 1


@pytest.mark.slow
def test_ddp_dry_run_with_two_processes(iso: Env) -> None:
    """job-ddp.yaml: torchrun, 2 processes, gloo on CPU, DistributedSampler and DDP."""
    done = torchjob(
        "run", str(EXAMPLE / "job-ddp.yaml"), "-P", "dry-run=true", cwd=iso.tmp, timeout=600
    )
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    run_dir, record = iso.only_run()
    assert record["distributed"]["world_size"] == 2
    log = (run_dir / "stdout.log").read_text()
    assert "[default0]:Train Epoch: 1 [0/" in log and "[default1]:Train Epoch: 1 [0/" in log
    assert "[default0]:Test set: Average loss: " in log
    assert "[default1]:Test set" not in log  # rank 0 alone tests and reports
    assert set(record["outputs"]) == {"accuracy", "loss"}


@pytest.mark.slow
def test_slurm_dry_run(iso: Env, slurm: Any) -> None:
    """job-slurm.yaml on the tests' one-node Slurm cluster."""
    done = torchjob(
        "run",
        str(EXAMPLE / "job-slurm.yaml"),
        "-P",
        "dry-run=true",
        cwd=iso.tmp,
        env={**os.environ, **slurm.env},
        timeout=600,
    )
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    run_dir, record = iso.only_run()
    assert record["backend"]["job_id"] and (run_dir / "job.sbatch").is_file()
    assert "#SBATCH --cpus-per-task=2" in (run_dir / "job.sbatch").read_text()
    assert "Test set: Average loss: " in (run_dir / "stdout.log").read_text()
    assert set(record["outputs"]) == {"accuracy", "loss"}


@pytest.mark.slow
def test_one_epoch_reaches_90_percent(iso: Env) -> None:
    done = torchjob("run", str(EXAMPLE / "job.yaml"), cwd=iso.tmp, timeout=600)
    assert done.returncode == 0, done.stderr.decode()
    run_dir, record = iso.only_run()
    log = (run_dir / "stdout.log").read_text()
    assert "Train Epoch: 1 [3840/4000 (95%)]" in log and "Train Epoch: 2" not in log
    metrics = json.loads((run_dir / "output" / "metrics.json").read_text())
    assert metrics["accuracy"] >= 0.90, log
    accuracy = (run_dir / "output" / "output_parameters" / "accuracy").read_text()
    assert float(accuracy) == pytest.approx(metrics["accuracy"])
    assert float(record["outputs"]["accuracy"]) == pytest.approx(metrics["accuracy"])
    assert f"Accuracy: {round(metrics['accuracy'] * 1000)}/1000" in log


@pytest.mark.slow
def test_resume_from_a_checkpoint(iso: Env) -> None:
    done = torchjob(
        "run", str(EXAMPLE / "job.yaml"), "-P", "save-model=true", cwd=iso.tmp, timeout=600
    )
    assert done.returncode == 0, done.stderr.decode()
    run_dir, _ = iso.only_run()
    checkpoint = run_dir / "model" / "checkpoint.pt"
    assert checkpoint.is_file() and (run_dir / "model" / "mnist_cnn.pt").is_file()
    first = json.loads((run_dir / "output" / "metrics.json").read_text())

    out = iso.tmp / "second"
    env = {
        **os.environ,
        "TORCHJOB_RESUME_FROM": str(checkpoint),
        "TORCHJOB_OUTPUT_DIR": str(out),
        "TORCHJOB_MODEL_DIR": str(out / "model"),
    }
    second = subprocess.run(
        [PYTHON, str(EXAMPLE / "main.py"), "--epochs", "2", "--save-model"],
        cwd=iso.tmp,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert second.returncode == 0, second.stderr
    assert f"Resumed from {checkpoint} at epoch 2" in second.stdout
    assert "Train Epoch: 1 " not in second.stdout and "Train Epoch: 2 [0/4000" in second.stdout
    assert second.stdout.count("Test set:") == 1
    state = torch.load(out / "model" / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 2
    assert state["scheduler"]["last_epoch"] == 2  # StepLR went on from the first run's step
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["accuracy"] >= first["accuracy"] - 0.02  # a second epoch does not undo one
