"""A tiny search with a selection stage in a run folder, as a script to SIGKILL:

    python tests/support/selection_job.py RUN_DIR

(the test kills it once the selection has scored a candidate, then resumes the run)."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

TESTS = Path(__file__).resolve().parents[1]
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from conftest import make_tiny_dense  # noqa: E402

from rlprune.agent.config import SearchConfig  # noqa: E402

CONFIG = {"model": "tiny", "dataset": "tiny", "fc_k": 1.0, "target": 0.6, "episodes": 10,
          "warmup": 6, "checkpoint_every": 5, "hidden": (16, 16), "batch_size": 4,
          "finetune_epochs": 0, "select_top_k": 4, "select_steps": 4,
          "select_rungs": 64}


def selection_runner():
    from rlprune.service.jobs.lifecycle import JobRunner

    return JobRunner(SearchConfig(**CONFIG), make_tiny_dense())


if __name__ == "__main__":
    import rlprune.env.selection as selection

    torch.set_num_threads(1)
    slow = selection.short_finetune

    def slowly(*args, **kwargs):  # slow enough for the test to kill it between two scores
        import time

        time.sleep(0.5)
        return slow(*args, **kwargs)

    import rlprune.service.jobs.selection_stage as stage

    stage.short_finetune = slowly
    runner = selection_runner()
    job = runner.create(sys.argv[1])
    with job:
        runner.run(job)
