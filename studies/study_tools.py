"""What several studies share: a job's prune-and-fine-tune, and the search's env for baselines.

Not a study of its own; `finetune_seeds.py`, `shift_sparsity.py`, `rank_candidates.py`,
`reward_signals.py` and `short_tune_signal.py` import it (run them from anywhere: Python puts
this folder on the path when it runs a script in it).
"""

from __future__ import annotations

from rlprune.agent.config import SearchConfig
from rlprune.env.finalize import Finalized, prune_and_finetune
from rlprune.env.pruning_env import PruningEnv
from rlprune.models.dense import Dense
from rlprune.models.train import resolve_device


def finalize_with(config: SearchConfig, dense: Dense, policy: dict, *, epochs: int | None = None,
                  seed: int | None = None) -> Finalized:
    """`prune_and_finetune` with a job's settings (fine-tune budget, learning rate, seed,
    BatchNorm recalibration, device), as a job finalizes; `epochs` and `seed` override the
    job's."""
    return prune_and_finetune(
        dense.model, policy, dense.data,
        epochs=config.finetune_epochs if epochs is None else epochs, lr=config.finetune_lr,
        seed=config.seed if seed is None else seed, bn_batches=config.bn_recalibration_batches,
        bn_batch_size=config.bn_batch_size, device=resolve_device(config.device))


def baseline_env(config: SearchConfig, dense: Dense) -> PruningEnv:
    """The search's environment, for its layer ownership, FC masks and budget (no episodes)."""
    return PruningEnv(dense.model, dense.data.val, dense.input_shape, config.env_config(),
                      calibration=dense.data.train, device=resolve_device(config.device))


def baseline_sparsities(method: str, env: PruningEnv) -> dict[str, float]:
    """Every layer's sparsity under a baseline (`uniform`, `global`, `lamp`, `erk`) on `env`'s
    exact budget, the FC rule's layers included."""
    return env.sparsities(env.baseline_counts(method))
