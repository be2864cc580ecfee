"""Cache entries: ready only with their marker, and never ready while half-deleted."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import torchrun_cli.store as store


def test_an_interrupted_delete_never_leaves_a_ready_entry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A kill in the middle of `env rm`/`cache prune` cannot be timed reliably, so the delete
    is interrupted by a stand-in: shutil.rmtree raising before it removes anything."""
    entry = tmp_path / "entry"
    (entry / "env" / "lib").mkdir(parents=True)
    (entry / "env" / "lib" / "module.py").write_text("x = 1\n")
    store.mark_ready(entry, "{}")
    assert store.is_ready(entry)

    def killed(path: Path, ignore_errors: bool = False) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(shutil, "rmtree", killed)
    with pytest.raises(KeyboardInterrupt):
        store.remove_entry(entry)
    assert (entry / "env" / "lib" / "module.py").exists()  # the tree is still there ...
    assert not store.is_ready(entry)  # ... but nothing will take it for ready
    monkeypatch.undo()
    store.remove_entry(entry)
    assert not entry.exists()
