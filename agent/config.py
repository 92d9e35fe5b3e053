"""Every setting of a search job, in one dataclass (saved as the run's config.json)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from rlprune.env.pruning_env import EnvConfig


@dataclass
class SearchConfig:
    # -- what to prune -----------------------------------------------------------------
    model: str = "vgg-mini"
    """Registry name or package.module:factory."""
    dataset: str = "mnist5k"
    checkpoint: str | None = None
    """Trained dense weights; None: use the cached pre-trained model, training it if absent."""
    data_dir: str = "data"
    download: bool = False
    # -- the environment ---------------------------------------------------------------
    target: float = 0.9
    scope: str = "total"
    fc_rule: str = "3sigma"
    fc_k: float | str = "auto"
    fc_during_search: bool = True
    reward: str = "loss"
    """The episode's reward on the val split: `loss` (minus the cross-entropy), `acc`, or
    AMC's `-err*log(flops)` / `-err*log(params)` (see EnvConfig.reward for the measurement)."""
    s_min: float = 0.0
    s_max: float | str = "auto"
    """The most an agent layer may prune; `auto`: 0.99, or more where LAMP or ERK prune a layer
    harder at this target (EnvConfig.s_max). Runs saved before it existed keep 0.99."""
    action_mapping: str = "auto"
    """`absolute` (AMC): an action maps onto [s_min, s_max], then the budget clamp cuts it;
    `feasible`: onto the range of weights the budget leaves its layer; `auto`: `feasible` when
    a layer other than the last holds most of the agent's weights, else `absolute`. Measured
    (docs/decisions.md): on LeNet-5 pruned every layer (FC1 holds 93%) absolute actions were
    mostly cut and the actor collapsed, feasible ones kept improving; on vgg-mini's conv layers
    absolute fine-tuned 0.27 points higher at 0.95 over 10 seeds."""
    bn_recalibration_batches: int = 1
    bn_fixed_batches: bool = True
    """Recalibrate on the same batches every episode (a deterministic reward)."""
    # -- the agent (AMC defaults) ------------------------------------------------------
    episodes: int = 400
    """Episodes in all, warm-up included."""
    warmup: int = 100
    """Warm-up episodes (the seed policies first, then uniform random actions) before the
    actor acts and learns."""
    noise_sigma: float = 0.5
    noise_decay: float = 0.95
    hidden: tuple[int, ...] = (128, 128)
    """Actor and critic hidden layers. AMC used 300-300; 128-128 learns as well on these
    12-feature states and makes each update ~1.6x cheaper (docs/benchmarks.md)."""
    batch_size: int = 64
    tau: float = 0.01
    learning_rate: float = 1e-3
    buffer_episodes: int = 100
    baseline_decay: float = 0.95
    seed_policies: tuple[str, ...] = ("uniform", "global", "lamp", "erk")
    """Baseline allocations played as the first warm-up episodes, so the search starts from
    them (and its best policy is at least their best on the proxy, for those within s_max:
    LAMP and ERK always with s_max `auto`); () for pure random warm-up, as in AMC."""
    # -- the job -----------------------------------------------------------------------
    checkpoint_every: int = 25
    """Episodes between checkpoints (one is also written on SIGINT/SIGTERM and at the end)."""
    finetune_epochs: int = 3
    finetune_lr: float = 0.01
    seed: int = 0
    device: str = "cpu"

    def env_config(self) -> EnvConfig:
        names = {f.name for f in fields(EnvConfig)}
        return EnvConfig(**{k: v for k, v in asdict(self).items() if k in names})

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> SearchConfig:
        known = {f.name for f in fields(cls)}
        cfg = cls(**{k: v for k, v in data.items() if k in known})
        cfg.hidden = tuple(cfg.hidden)
        cfg.seed_policies = tuple(cfg.seed_policies)
        return cfg
