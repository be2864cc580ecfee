"""A small reader for MNIST's IDX files, gzipped or not, with torch only (no torchvision).

IDX (http://yann.lecun.com/exdb/mnist/): a 4-byte big-endian magic number (two zero bytes, a
type byte, 0x08 for unsigned bytes, and the number of dimensions), one 4-byte big-endian size
per dimension, then the data. MNIST's images are magic 2051 (N x 28 x 28), its labels 2049 (N).

Every check raises ValueError naming the file and what is wrong with it: a wrong magic number,
unexpected dimensions, a truncated (or overlong) file, images and labels of different counts.
The same file names serve the 5,000-digit subset in data/ and the full 60,000/10,000 MNIST.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import torch

IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions
LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension
ROWS = COLS = 28
CLASSES = 10
MEAN, STD = 0.1307, 0.3081  # of MNIST's training pixels, as in the PyTorch example
GZIP_MAGIC = b"\x1f\x8b"
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def read_bytes(path: Path) -> bytes:
    """The file's content, decompressed when it starts with gzip's magic bytes."""
    raw = path.read_bytes()
    if not raw.startswith(GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except EOFError as exc:
        raise ValueError(f"{path}: truncated gzip file (the compressed data ends early)") from exc
    except (OSError, zlib.error) as exc:
        raise ValueError(f"{path}: corrupt gzip file: {exc}") from exc


def read_idx(path: Path, magic: int) -> tuple[tuple[int, ...], bytes]:
    """Check the header and the length of an IDX file; return its dimensions and its data."""
    data = read_bytes(path)
    if len(data) < 4:
        raise ValueError(f"{path}: truncated IDX file: {len(data)} bytes, no complete header")
    (found,) = struct.unpack(">I", data[:4])
    if found != magic:
        kinds = {IMAGES_MAGIC: "images", LABELS_MAGIC: "labels"}
        what = f" ({kinds[found]})" if found in kinds else ""
        raise ValueError(
            f"{path}: wrong magic number {found}{what}, expected {magic} "
            f"({kinds[magic]}); is this an MNIST IDX file of the right kind?"
        )
    ndims = magic & 0xFF
    header = 4 + 4 * ndims
    if len(data) < header:
        raise ValueError(
            f"{path}: truncated IDX file: {len(data)} bytes, the header alone takes {header}"
        )
    dims = struct.unpack(f">{ndims}I", data[4:header])
    count = 1
    for size in dims:
        count *= size
    expected = header + count
    if len(data) < expected:
        raise ValueError(
            f"{path}: truncated IDX file: {len(data)} bytes, expected {expected} "
            f"for dimensions {' x '.join(map(str, dims))}"
        )
    if len(data) > expected:
        raise ValueError(
            f"{path}: {len(data) - expected} bytes more than its dimensions "
            f"{' x '.join(map(str, dims))} need ({expected}); a damaged file?"
        )
    return dims, data[header:]


def load_images(path: Path, normalize: bool = True) -> torch.Tensor:
    """Images as float32 of shape (N, 1, 28, 28): pixels scaled to [0, 1], then, with
    `normalize`, standardised as the PyTorch example does: (x - 0.1307) / 0.3081."""
    dims, pixels = read_idx(path, IMAGES_MAGIC)
    if dims[1:] != (ROWS, COLS):
        raise ValueError(
            f"{path}: images of {dims[1]} x {dims[2]} pixels, expected {ROWS} x {COLS}"
        )
    images = _uint8(pixels).reshape(dims[0], 1, ROWS, COLS).to(torch.float32).div_(255.0)
    return images.sub_(MEAN).div_(STD) if normalize else images


def load_labels(path: Path) -> torch.Tensor:
    """Labels as int64 of shape (N,), each 0..9."""
    _dims, values = read_idx(path, LABELS_MAGIC)
    labels = _uint8(values).to(torch.int64)
    if labels.numel() and int(labels.max()) >= CLASSES:
        raise ValueError(f"{path}: label {int(labels.max())} is not a digit 0..9")
    return labels


def find(folder: Path, name: str) -> Path:
    """`name` or `name.gz` in `folder` (or in torchvision's MNIST/raw below it)."""
    for where in (folder, folder / "MNIST" / "raw"):
        for candidate in (where / name, where / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    raise FileNotFoundError(f"{folder}: no {name} or {name}.gz (MNIST's IDX file names)")


def load_split(
    folder: Path, split: str, normalize: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """The `train` or `test` images and labels in `folder`, checked to be of the same count."""
    images_name, labels_name = FILES[split]
    images_path, labels_path = find(folder, images_name), find(folder, labels_name)
    images, labels = load_images(images_path, normalize), load_labels(labels_path)
    if len(images) != len(labels):
        raise ValueError(
            f"{folder}: {len(images)} images in {images_path.name} but "
            f"{len(labels)} labels in {labels_path.name}; the files do not match"
        )
    return images, labels


def _uint8(data: bytes) -> torch.Tensor:
    # A bytearray: torch.frombuffer warns on read-only buffers such as bytes.
    return (
        torch.frombuffer(bytearray(data), dtype=torch.uint8)
        if data
        else torch.empty(0, dtype=torch.uint8)
    )
