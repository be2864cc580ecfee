"""The PyTorch MNIST example (github.com/pytorch/examples, mnist/main.py), with torch only.

The same CNN, training loop, flags and output lines as the original, plus what a job run by
torchjob uses (every variable is optional: the script runs the same with plain `python`):

- data: --data-dir, else $TORCHJOB_CHANNEL_TRAIN, else data/ next to this file (5,000 real
  MNIST digits); the test files come from $TORCHJOB_CHANNEL_TEST when set. The full
  60,000/10,000 MNIST works the same: point --data-dir at its four IDX files (gzipped or not).
- --save-model: mnist_cnn.pt and, after every epoch, checkpoint.pt (model, optimizer, scheduler,
  epoch) in $TORCHJOB_MODEL_DIR, else the current folder.
- $TORCHJOB_RESUME_FROM: a checkpoint.pt (or a folder holding one) to continue from, at the
  epoch after the one it saved.
- $TORCHJOB_OUTPUT_DIR: the final test accuracy (0..1) and loss in metrics.json and as one file
  per value in output_parameters/.

    python main.py --epochs 1          # ~93% on the 1,000 test digits, in seconds on a CPU
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

# torch warns at import when numpy is missing; nothing here uses numpy.
warnings.filterwarnings("ignore", message="Failed to initialize NumPy")

import idx  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn, optim  # noqa: E402
from torch.nn.parallel import DistributedDataParallel  # noqa: E402
from torch.optim.lr_scheduler import StepLR  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402
from torch.utils.data.distributed import DistributedSampler  # noqa: E402

HERE = Path(__file__).resolve().parent
CHECKPOINT = "checkpoint.pt"
MODEL_FILE = "mnist_cnn.pt"


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        x = F.relu(x)
        x = self.conv2(x)
        x = F.relu(x)
        x = F.max_pool2d(x, 2)
        x = self.dropout1(x)
        x = torch.flatten(x, 1)
        x = self.fc1(x)
        x = F.relu(x)
        x = self.dropout2(x)
        x = self.fc2(x)
        return F.log_softmax(x, dim=1)


def train(
    args: argparse.Namespace,
    model: nn.Module,
    device: torch.device,
    train_loader: DataLoader[tuple[torch.Tensor, ...]],
    optimizer: optim.Optimizer,
    epoch: int,
) -> None:
    model.train()
    size = len(train_loader.dataset)  # type: ignore[arg-type]
    for batch_idx, (data, target) in enumerate(train_loader):
        data, target = data.to(device), target.to(device)
        optimizer.zero_grad()
        output = model(data)
        loss = F.nll_loss(output, target)
        loss.backward()  # type: ignore[no-untyped-call]  # untyped in torch 2.13
        optimizer.step()
        if batch_idx % args.log_interval == 0:
            print(
                f"Train Epoch: {epoch} [{batch_idx * len(data)}/{size} "
                f"({100.0 * batch_idx / len(train_loader):.0f}%)]\tLoss: {loss.item():.6f}",
                flush=True,
            )
            if args.dry_run:
                break


def test(
    model: nn.Module, device: torch.device, test_loader: DataLoader[tuple[torch.Tensor, ...]]
) -> tuple[float, float]:
    """Average loss and accuracy (a fraction) on the test set."""
    model.eval()
    test_loss = 0.0
    correct = 0
    with torch.no_grad():
        for data, target in test_loader:
            data, target = data.to(device), target.to(device)
            output = model(data)
            test_loss += F.nll_loss(output, target, reduction="sum").item()  # sum up batch loss
            pred = output.argmax(dim=1, keepdim=True)  # the index of the max log-probability
            correct += int(pred.eq(target.view_as(pred)).sum().item())
    size = len(test_loader.dataset)  # type: ignore[arg-type]
    test_loss /= size
    print(
        f"\nTest set: Average loss: {test_loss:.4f}, Accuracy: {correct}/{size} "
        f"({100.0 * correct / size:.0f}%)\n",
        flush=True,
    )
    return test_loss, correct / size


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="PyTorch MNIST Example")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=64,
        metavar="N",
        help="input batch size for training (default: 64)",
    )
    parser.add_argument(
        "--test-batch-size",
        type=int,
        default=1000,
        metavar="N",
        help="input batch size for testing (default: 1000)",
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=14,
        metavar="N",
        help="number of epochs to train (default: 14)",
    )
    parser.add_argument(
        "--lr", type=float, default=1.0, metavar="LR", help="learning rate (default: 1.0)"
    )
    parser.add_argument(
        "--gamma",
        type=float,
        default=0.7,
        metavar="M",
        help="learning rate step gamma (default: 0.7)",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        default=False,
        help="quickly check a single pass: one batch, then the test set",
    )
    parser.add_argument("--seed", type=int, default=1, metavar="S", help="random seed (default: 1)")
    parser.add_argument(
        "--log-interval",
        type=int,
        default=10,
        metavar="N",
        help="how many batches to wait before logging training status",
    )
    parser.add_argument(
        "--save-model",
        action="store_true",
        default=False,
        help="save mnist_cnn.pt, and checkpoint.pt after every epoch, in "
        "$TORCHJOB_MODEL_DIR (default: the current folder)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="folder of MNIST's IDX files, gzipped or not (default: "
        "$TORCHJOB_CHANNEL_TRAIN, else data/ next to this script)",
    )
    parser.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda", "mps"),
        default="auto",
        help="where to train; auto takes cuda or mps when available, else cpu",
    )
    args = parser.parse_args(argv)
    for name in ("batch_size", "test_batch_size", "log_interval"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.epochs < 0:
        parser.error("--epochs must not be negative")
    try:
        args.device = pick_device(args.device)
    except ValueError as exc:
        parser.error(str(exc))
    return args


def pick_device(name: str) -> torch.device:
    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    if name == "auto":
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    if (name == "cuda" and not cuda) or (name == "mps" and not mps):
        raise ValueError(
            f"--device {name}: not available with this torch build or machine "
            f"(torch {torch.__version__}); use --device cpu or auto"
        )
    return torch.device(name)


def data_dirs(args: argparse.Namespace) -> tuple[Path, Path]:
    """Where the training and the test files are."""
    if args.data_dir is not None:
        return args.data_dir, args.data_dir
    train_dir = Path(os.environ.get("TORCHJOB_CHANNEL_TRAIN") or HERE / "data")
    return train_dir, Path(os.environ.get("TORCHJOB_CHANNEL_TEST") or train_dir)


def save_atomic(obj: Any, path: Path) -> None:
    """torch.save to a temporary name, then rename: a stopped run never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    torch.save(obj, partial)
    os.replace(partial, path)


def write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)


def write_outputs(output_dir: Path, metrics: dict[str, float]) -> None:
    """metrics.json and output_parameters/NAME, one value per file."""
    write_text_atomic(output_dir / "metrics.json", json.dumps(metrics) + "\n")
    for name, value in metrics.items():
        write_text_atomic(output_dir / "output_parameters" / name, f"{value}\n")


def resume_path(value: str) -> Path:
    path = Path(value)
    if path.is_dir():
        path = path / CHECKPOINT
    if not path.is_file():
        sys.exit(f"TORCHJOB_RESUME_FROM: {path} is not a checkpoint file")
    return path


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    device: torch.device = args.device
    torch.manual_seed(args.seed)

    train_dir, test_dir = data_dirs(args)
    try:
        train_set = TensorDataset(*idx.load_split(train_dir, "train"))
        test_set = TensorDataset(*idx.load_split(test_dir, "test"))
    except (OSError, ValueError) as exc:
        sys.exit(f"cannot read MNIST: {exc}")
    # Shuffled with its own generator, reseeded every epoch: a resumed run sees the batches
    # an uninterrupted one would have seen.
    shuffle = torch.Generator()
    loader_kwargs: dict[str, Any] = {"pin_memory": device.type == "cuda"}
    # Under torchrun (torchjob's `distributed:`), each process trains on its share of the data
    # (DistributedSampler) and DDP averages the gradients; rank 0 tests, reports and saves.
    gang = int(os.environ.get("WORLD_SIZE", "1")) > 1
    sampler: DistributedSampler[Any] | None = None
    if gang:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        sampler = DistributedSampler(train_set, shuffle=True, seed=args.seed)
    lead = not gang or dist.get_rank() == 0
    train_loader = DataLoader(
        train_set,
        batch_size=args.batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        generator=None if gang else shuffle,
        **loader_kwargs,
    )
    test_loader = DataLoader(test_set, batch_size=args.test_batch_size, **loader_kwargs)

    model = Net().to(device)
    optimizer = optim.Adadelta(model.parameters(), lr=args.lr)
    scheduler = StepLR(optimizer, step_size=1, gamma=args.gamma)

    model_dir = Path(os.environ.get("TORCHJOB_MODEL_DIR") or ".")
    output_dir = os.environ.get("TORCHJOB_OUTPUT_DIR")
    start = 1
    if resume_from := os.environ.get("TORCHJOB_RESUME_FROM"):
        path = resume_path(resume_from)
        state = torch.load(path, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if "rng" in state:
            torch.set_rng_state(state["rng"].cpu())
        start = int(state["epoch"]) + 1
        print(f"Resumed from {path} at epoch {start}", flush=True)
        if start > args.epochs:
            print(
                f"Nothing to train: the checkpoint holds epoch {start - 1} of "
                f"--epochs {args.epochs}",
                flush=True,
            )

    net = model
    if gang:
        model = DistributedDataParallel(model)
    metrics: dict[str, float] = {}
    began = time.monotonic()
    for epoch in range(start, args.epochs + 1):
        shuffle.manual_seed(args.seed * 100_003 + epoch)
        if sampler is not None:
            sampler.set_epoch(epoch)
        train(args, model, device, train_loader, optimizer, epoch)
        scheduler.step()
        if not lead:
            if args.dry_run:
                break
            continue
        loss, accuracy = test(net, device, test_loader)
        metrics = {"accuracy": accuracy, "loss": loss}
        if output_dir:
            write_outputs(Path(output_dir), metrics)
        if args.save_model:
            save_atomic(
                {
                    "epoch": epoch,
                    "model": net.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "rng": torch.get_rng_state(),
                },
                model_dir / CHECKPOINT,
            )
        if args.dry_run:
            break
    if gang:
        dist.barrier()
        dist.destroy_process_group()
        if not lead:
            return
    if not metrics:  # no epoch left to train (a resumed run): still report the model's score
        loss, accuracy = test(net, device, test_loader)
        metrics = {"accuracy": accuracy, "loss": loss}
        if output_dir:
            write_outputs(Path(output_dir), metrics)

    if args.save_model:
        save_atomic(net.state_dict(), model_dir / MODEL_FILE)
    print(
        f"Done in {time.monotonic() - began:.1f} s on {device}: test accuracy "
        f"{metrics['accuracy']:.4f}, loss {metrics['loss']:.4f}",
        flush=True,
    )


if __name__ == "__main__":
    main()
