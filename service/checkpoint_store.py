"""Where a run's search checkpoints live: `RUN/checkpoints/epNNNNNN/`, and `latest`.

A checkpoint is assembled in a hidden folder and renamed into place, then `latest` is switched
by an atomic rename, so a kill at any instant leaves the previous checkpoint intact. The
newest `KEEP` checkpoints are kept. What a checkpoint holds is the agent's business
(`rlprune.agent.checkpoint`).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from rlprune.service.files import write_text_atomic

KEEP = 2


class CheckpointStore:
    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def save(self, episode: int, write: Callable[[Path], None]) -> Path:
        """Checkpoint `episode`: `write(folder)` fills a fresh folder, which then becomes
        `epNNNNNN` and `latest`."""
        name = f"ep{episode:06d}"
        tmp = self.folder / f".{name}.tmp{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        write(tmp)
        final = self.folder / name
        if final.exists():  # re-reached after a resume: same episode, same content
            shutil.rmtree(final)
        os.replace(tmp, final)
        write_text_atomic(self.folder / "latest", name + "\n")
        for old in self.saved()[:-KEEP]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def saved(self) -> list[Path]:
        """The checkpoint folders, oldest first."""
        if not self.folder.is_dir():
            return []
        return sorted(p for p in self.folder.glob("ep*") if p.is_dir())

    def latest(self) -> Path | None:
        """The checkpoint `latest` names, if it holds a state file."""
        pointer = self.folder / "latest"
        if not pointer.is_file():
            return None
        path = self.folder / pointer.read_text().strip()
        return path if (path / "state.pt").is_file() else None
