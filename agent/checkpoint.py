"""What a search checkpoint holds, and how the agent is written to and read from one folder.

A checkpoint folder has the SB3 agent (`agent.zip`: networks and optimizers), its replay
buffer (`replay_buffer.pkl`) and `state.pt`: the search state, the problem's fingerprint and
every random generator an episode draws from (python, numpy, torch, the action space's, the
environment's, the noise's). Where checkpoints are kept (folders, `latest`, atomic renames)
is the service's business (`rlprune.service.jobs.checkpoint_store`).
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

STATE_FORMAT = "rlprune.search-checkpoint/1"
FILES = ("agent.zip", "replay_buffer.pkl", "state.pt")


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


def write(folder: Path, agent, state: dict) -> None:
    """Write the agent, its replay buffer and `state` into `folder` (which exists)."""
    agent.save(folder / "agent.zip")
    agent.save_replay_buffer(folder / "replay_buffer.pkl")
    torch.save({"format": STATE_FORMAT, **state}, folder / "state.pt")


def read_state(folder: Path) -> dict:
    """`state.pt`; ValueError if it is not a search checkpoint's."""
    # Our own file, written by write() above; it holds numpy RNG tuples, hence no weights_only.
    state = torch.load(folder / "state.pt", map_location="cpu", weights_only=False)
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise ValueError(f"{folder} is not an rlprune search checkpoint")
    return state
