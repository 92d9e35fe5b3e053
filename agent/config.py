"""Every setting of a pruning job, in one dataclass (saved as the run's config.json).

`SearchConfig` extends the environment's `EnvConfig`, so the env's settings are declared once
and passed on as they are. The command line, the Python API (keyword arguments) and the
validation are all made from these declarations.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from rlprune.agent.methods import seed_policies
from rlprune.env.config import EnvConfig
from rlprune.models.errors import SettingError, UserError
from rlprune.models.settings import check, setting, typed_fields

DEVICES = ("auto", "cpu", "cuda")
AGENT_NAMES = ("ddpg", "td3")  # agent/ddpg.py AGENTS
# the largest values of the numeric settings: a larger one is a typo, would run for days, or
# would overflow numpy's seeds
MAX_EPISODES = 100_000
MAX_EPOCHS = 10_000
MAX_WORKERS = 256
MAX_SEED = 2**32 - 1
MAX_HIDDEN = (8, 4096)  # layers, width
TOP_KEPT = 64  # allocations a search remembers for its selection stage (agent/search.py)
# config.json keys of earlier versions, and their names now
RENAMED = {"checkpoint": "weights"}


def parse_ints(text: str) -> tuple[int, ...]:
    """`128,128` (for --hidden)."""
    return tuple(int(part) for part in text.split(",") if part.strip())


def parse_names(text: str) -> tuple[str, ...]:
    """`uniform,lamp` or `none` (for --seed-policies)."""
    return tuple(n.strip() for n in text.split(",") if n.strip() and n.strip() != "none")


@dataclass
class SearchConfig(EnvConfig):
    # -- what to prune --------------------------------------------------------------------
    model: str = setting(
        "vgg-mini", "lenet5, lenet300, vgg-mini, vgg16, resnet56, resnet50, or "
        "package.module:factory (returning an nn.Module).", group="source", section="data")
    dataset: str = setting(
        "mnist5k", "mnist5k, digits (both embedded), cifar10, cifar100, imagefolder:PATH, or "
        "package.module:factory.", group="source", section="data")
    weights: str | None = setting(
        None, "The trained dense weights (a .pt state_dict); default: the cached pre-trained "
        "model.", group="source", aliases=("--checkpoint",), metavar="PATH", section="data")
    data_dir: str = setting("data", "Where cifar10/100 live.", group="source", section="data")
    download: bool = setting(False, "Allow cifar10/100 to be downloaded into --data-dir.",
                             group="source", section="data")
    # -- the agent (AMC's settings unless measured otherwise) -------------------------------
    agent: str = setting("ddpg", "The search's RL algorithm: AMC's DDPG, or SB3's TD3.",
                         choices=AGENT_NAMES, group="agent", section="search")
    episodes: int = setting(400, "Episodes in all, warm-up included.", min=1,
                            max=MAX_EPISODES, group="agent", section="search")
    warmup: int = setting(
        100, "Episodes before the actor acts: the seed policies, then random actions.", min=0,
        max=MAX_EPISODES, group="agent", section="search")
    noise_sigma: float = setting(0.5, "Exploration noise at the end of warm-up.", min=0.0,
                                 max=10.0, group="agent", section="search")
    noise_decay: float = setting(0.95, "The noise is multiplied by this after every episode.",
                                 min=0.0, max=1.0, group="agent", section="search")
    hidden: tuple[int, ...] = setting(
        (128, 128), "Actor and critic hidden layer widths.", parse=parse_ints, metavar="N,N",
        group="agent", section="search")
    batch_size: int = setting(64, "The agent's minibatch.", min=1, max=65536, group="agent",
                              section="search")
    tau: float = setting(0.01, "Soft target update.", min=0.0, max=1.0, group="agent",
                         section="search")
    learning_rate: float = setting(1e-3, "Actor and critic learning rate.", min=0.0,
                                   max=10.0, group="agent", section="search")
    buffer_episodes: int = setting(100, "Replay buffer size, in episodes.", min=1,
                                   max=MAX_EPISODES, group="agent", section="search")
    baseline_decay: float = setting(
        0.95, "Decay of the moving-average reward baseline.", min=0.0, max=1.0, group="agent",
        section="search")
    seed_policies: tuple[str, ...] | None = setting(
        None, "Baselines played first in the warm-up (comma-separated, or none; default: "
        "all of the granularity's).", parse=parse_names, metavar="P,P", group="agent",
        section="search")
    workers: int = setting(
        1, "Episodes played at a time, each on its own env copy (--episodes: a multiple of "
        "K).", min=1, max=MAX_WORKERS, group="agent", metavar="K", section="scale")
    ray_address: str | None = setting(
        None, "Run on Ray: auto (this machine's cluster), local (one started for the run) or "
        "host:port.", group="agent", metavar="ADDR", section="scale")
    gpus_per_worker: float = setting(
        0.0, "GPUs each Ray worker asks for (its env then runs on cuda).", min=0.0, max=64.0,
        group="agent", metavar="N", section="scale")
    ray_timeout_s: float = setting(
        60.0, "Seconds a Ray env actor may go silent before its node counts as lost.",
        min=1.0, max=3600.0, group="agent", metavar="SECONDS", section="scale")
    select_top_k: int = setting(
        1, "Candidates: the top K allocations by reward, and the seed policies (0: no "
        "selection).", min=0, max=TOP_KEPT, group="agent", metavar="K", section="selection")
    select_steps: int = setting(
        24, "SGD steps of the first rung; each later rung doubles them.", min=1,
        max=100_000, group="agent", metavar="STEPS", section="selection")
    select_rungs: int = setting(
        1, "Rungs of successive halving at most; the best by val is kept.", min=1, max=64,
        group="agent", metavar="N", section="selection")
    # -- the job --------------------------------------------------------------------------
    checkpoint_every: int = setting(
        25, "Episodes between search checkpoints (one is also written on a stop and at the "
        "end).", min=1, max=MAX_EPISODES, group="job", metavar="EPISODES", section="run")
    finetune_epochs: int = setting(3, "Masked fine-tuning epochs after pruning.", min=0,
                                   max=MAX_EPOCHS, section="finetune")
    finetune_lr: float = setting(0.01, "Peak learning rate of the fine-tune.", min=0.0,
                                 max=10.0, section="finetune")
    int8_size: bool = setting(
        True, "Leave the int8 file's size out of the result table (it takes a quantization).",
        negate="--no-int8-size", section="finetune")
    seed: int = setting(0, "Seed of the search, the fine-tune and a pre-training.", min=0,
                        max=MAX_SEED, section="data")
    device: str = setting("auto", "Where the job runs (auto: cuda when available, else cpu).",
                          choices=DEVICES, section="scale")

    def env_config(self) -> EnvConfig:
        return EnvConfig(**{f.name: getattr(self, f.name) for f in fields(EnvConfig)})

    def validate(self) -> None:
        """Refuse any setting out of range, and settings that do not fit together."""
        super().validate()
        check(self)
        known = self._seed_choices()
        unknown = [p for p in self.seed_policies_for() if p not in known]
        if unknown:
            raise SettingError("seed_policies", f"has unknown {', '.join(unknown)} for "
                               f"granularity {self.granularity}; choose from "
                               f"{','.join(known)} or none")
        if self.warmup > self.episodes:
            raise SettingError("warmup", f"({self.warmup}) must not be more than the "
                               f"episodes ({self.episodes}); lower it or raise the episodes")
        if self.episodes % self.workers:
            k, n = self.workers, self.episodes
            raise SettingError("episodes", f"({n}) must be a multiple of `workers` {k} (a "
                               f"round plays {k} episodes): use {n - n % k or k} or "
                               f"{n - n % k + k}", others=("workers",))
        if self.gpus_per_worker and not self.ray_address:
            raise SettingError("gpus_per_worker", "needs `ray_address` (local workers use "
                               "`device`)", others=("ray_address", "device"))
        layers, width = MAX_HIDDEN
        if not self.hidden or len(self.hidden) > layers or not all(
                1 <= w <= width for w in self.hidden):
            raise SettingError("hidden", f"must be 1 to {layers} layer widths of 1 to {width}, "
                               f"got {self.hidden}")

    def _seed_choices(self) -> tuple[str, ...]:
        return seed_policies(self.granularity)

    def seed_policies_for(self) -> tuple[str, ...]:
        """The seed policies to play: as given, or every baseline of the granularity."""
        return self._seed_choices() if self.seed_policies is None else self.seed_policies

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> SearchConfig:
        """A config from config.json: unknown keys ignored, renamed ones mapped, every value
        checked against its field's type and limits."""
        if not isinstance(data, dict):
            raise UserError(f"a config must be a mapping, got {type(data).__name__}")
        data = {RENAMED.get(k, k): v for k, v in data.items()}
        config = cls(**typed_fields(cls, data))
        config.validate()
        return config

    @classmethod
    def with_settings(cls, **settings) -> SearchConfig:
        """A config from keyword arguments; an unknown name is refused with the known ones."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise UserError(f"unknown setting {', '.join(unknown)}; the settings are "
                            f"{', '.join(sorted(known))}")
        return cls(**typed_fields(cls, settings))
