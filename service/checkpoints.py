"""Search checkpoints, written at episode boundaries into `RUN/checkpoints/epNNNNNN/`.

Each holds the SB3 agent (`agent.zip`: networks and optimizers), its replay buffer, and
`state.pt`: the search state and every random generator an episode draws from (python, numpy,
torch, the action space's, the environment's, the noise's). A checkpoint is assembled in a
hidden folder and renamed into place, then `latest` is switched by an atomic rename, so a kill
at any instant leaves the previous checkpoint intact.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from rlprune.service.jobs import write_text_atomic

STATE_FORMAT = "rlprune.search-checkpoint/1"
KEEP = 2


def global_rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_global_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(folder: Path, episode: int, agent, state: dict) -> Path:
    """Write checkpoint `episode` (agent, buffer, `state`) and point `latest` at it."""
    name = f"ep{episode:06d}"
    tmp = folder / f".{name}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    agent.save(tmp / "agent.zip")
    agent.save_replay_buffer(tmp / "replay_buffer.pkl")
    torch.save({"format": STATE_FORMAT, **state}, tmp / "state.pt")
    final = folder / name
    if final.exists():  # re-reached after a resume: same episode, same content
        shutil.rmtree(final)
    os.replace(tmp, final)
    write_text_atomic(folder / "latest", name + "\n")
    for old in sorted(p for p in folder.glob("ep*") if p.is_dir())[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest(folder: Path) -> Path | None:
    pointer = folder / "latest"
    if not pointer.is_file():
        return None
    path = folder / pointer.read_text().strip()
    return path if (path / "state.pt").is_file() else None


def read_state(path: Path) -> dict:
    # Our own file, written by save() above; it holds numpy RNG tuples, hence no weights_only.
    state = torch.load(path / "state.pt", map_location="cpu", weights_only=False)
    if state.get("format") != STATE_FORMAT:
        raise ValueError(f"{path} is not an rlprune search checkpoint")
    return state
