"""Where a run's search checkpoints live: `RUN/checkpoints/epNNNNNN/`, and `latest`.

A checkpoint is assembled in a hidden folder and renamed into place, then `latest` is switched
by an atomic rename, so a kill at any instant leaves the previous checkpoint intact. The
newest `KEEP` checkpoints up to the one just written are kept (later ones, from a timeline a
resume went back on, are left until they are re-reached and replaced). What a checkpoint
holds is the agent's business (`rlprune.agent.checkpoint`).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from rlprune.service.jobs.files import write_text_atomic

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
        # (`or 0`: for mypy; saved() holds only folders whose name gives an episode)
        for old in [p for p in self.saved() if (episode_of(p) or 0) <= episode][:-KEEP]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def saved(self) -> list[Path]:
        """The checkpoint folders, oldest first."""
        if not self.folder.is_dir():
            return []
        return sorted((p for p in self.folder.iterdir()
                       if p.is_dir() and episode_of(p) is not None),
                      key=lambda p: episode_of(p) or 0)

    def candidates(self) -> list[Path]:
        """Where a resume may continue from, best first: the checkpoint `latest` names, then
        every other one, newest first."""
        first = self.latest()
        return ([first] if first else []) + [p for p in reversed(self.saved()) if p != first]

    def latest(self) -> Path | None:
        """The checkpoint `latest` names, if it holds a state file."""
        try:
            name = (self.folder / "latest").read_text().strip()
        except (OSError, UnicodeDecodeError):
            return None
        path = self.folder / name
        ok = episode_of(path) is not None and path.parent == self.folder
        return path if ok and (path / "state.pt").is_file() else None


def episode_of(folder: Path) -> int | None:
    """The episode a checkpoint folder's name (`epNNNNNN`) gives, or None."""
    name = folder.name
    return int(name[2:]) if name.startswith("ep") and name[2:].isdigit() else None
