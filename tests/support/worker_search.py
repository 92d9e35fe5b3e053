"""A search of the tiny net with K env workers, in this process or as a script to SIGKILL:

    python tests/support/worker_search.py CHECKPOINTS K [RAY_ADDRESS]

runs the same search as `tiny_search(K, ...)` with its checkpoints in CHECKPOINTS (the
test kills it after one and resumes the rest in its own process). Ray's workers must find
tests/ on their path (the test's Ray instance is started with it in PYTHONPATH)."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

TESTS = Path(__file__).resolve().parents[1]
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from conftest import make_tiny_dense  # noqa: E402

from rlprune.agent.config import SearchConfig  # noqa: E402
from rlprune.agent.search import Search  # noqa: E402

EPISODES, WARMUP, EVERY = 8, 2, 2


def tiny_search(workers: int, ray_address: str | None = None, **settings) -> Search:
    config = SearchConfig(**{"model": "tiny", "dataset": "tiny", "fc_k": 1.0, "target": 0.5,
                             "episodes": EPISODES, "warmup": WARMUP, "checkpoint_every": EVERY,
                             "hidden": (16, 16), "batch_size": 4, "workers": workers,
                             "ray_address": ray_address, **settings})
    config.validate()
    return Search(config, make_tiny_dense())


if __name__ == "__main__":
    from rlprune.service.jobs.checkpoint_store import CheckpointStore

    torch.set_num_threads(1)
    folder, k = Path(sys.argv[1]), int(sys.argv[2])
    address = sys.argv[3] if len(sys.argv) > 3 else None
    # a slow proxy evaluation, so that the test can kill it between two checkpoints
    tiny_search(k, address, simulated_eval_s=0.3).run(checkpoints=CheckpointStore(folder))
