"""A ConfigMap volume as the kubelet writes it, for the hot-reload tests."""

from __future__ import annotations

import os
from pathlib import Path


class ConfigMapVolume:
    """``catalog.yaml -> ..data/catalog.yaml``, ``..data -> ..<timestamp>``; updates swap
    ``..data`` atomically (``..data_tmp`` symlink renamed over it), as the kubelet's
    AtomicWriter does. The file itself is never rewritten in place."""

    def __init__(self, root: Path, text: str) -> None:
        self.root = root
        self.generation = 0
        self._write(text)
        (root / "catalog.yaml").symlink_to("..data/catalog.yaml")

    @property
    def path(self) -> Path:
        return self.root / "catalog.yaml"

    def _write(self, text: str) -> None:
        self.generation += 1
        stamp = f"..2026_11_27_23_0{self.generation}_00.{1234 + self.generation}"
        (self.root / stamp).mkdir()
        (self.root / stamp / "catalog.yaml").write_text(text)
        old = os.readlink(self.root / "..data") if (self.root / "..data").is_symlink() else None
        (self.root / "..data_tmp").symlink_to(stamp)
        os.rename(self.root / "..data_tmp", self.root / "..data")
        if old is not None:
            (self.root / old / "catalog.yaml").unlink()
            (self.root / old).rmdir()

    def update(self, text: str) -> None:
        self._write(text)
