"""The environment's settings: what is pruned, under which budget, and how it is scored."""

from __future__ import annotations

from dataclasses import dataclass

from rlprune.env.granularity import (
    granularity_named,
    granularity_names,
    settings_of_other_granularities,
)
from rlprune.models.errors import SettingError, UserError
from rlprune.models.settings import check, setting

BUDGETS = ("flops", "params", "latency")
CRITERIA = ("l1", "taylor", "similarity")
FC_RULES = ("3sigma", "agent", "none")
REWARDS = ("auto", "loss", "acc", "-err*log(flops)", "-err*log(params)")
SCOPES = ("total", "agent")
ACTION_MAPPINGS = ("auto", "absolute", "feasible")
PROXY_PATHS = ("auto", "fast", "slim", "plain")
# the settings one granularity reads and the other ignores
CHANNEL_ONLY = ("budget", "criterion", "round_to", "latency_table", "latency_batch")
WEIGHT_ONLY = ("scope", "fc_rule", "fc_k", "fc_during_search")
S_MAX_FLOOR = 0.99  # the design's s_max; `auto` never goes below it


def parse_k(value: str | float) -> float | str:
    """`auto` or a positive number (for --fc-k)."""
    if isinstance(value, str) and value == "auto":
        return value
    k = float(value)
    if not k > 0:
        raise ValueError("k must be positive")
    return k


def parse_s_max(text: str) -> float | str:
    """`auto` or a number (for --s-max)."""
    return text if text == "auto" else float(text)


def parse_round_to(text: str) -> int | str:
    """`auto` or a whole number (for --round-to)."""
    return text if text == "auto" else int(text)


def read_latency_table(path: str) -> dict:
    """A latency table file (for --latency-table): its contents, checked."""
    import json
    from pathlib import Path

    from rlprune.env.latency_table import check_table

    try:
        table = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UserError(f"latency table {path}: cannot be read as JSON "
                        f"({type(exc).__name__})") from None
    return check_table(table, f"latency table {path}")


def parse_target(text: str) -> float:
    """A number (for --target; its range is checked with the other settings)."""
    return float(text)


@dataclass
class EnvConfig:
    granularity: str = setting(
        "weight", "`weight`: per-layer weight sparsity (masks: file and speed stay dense); "
        "`channel`: whole channels removed (Torch-Pruning), so the network shrinks.",
        choices=granularity_names)
    target: float = setting(
        0.9, "In (0, 1): the fraction removed of the prunable weights (Conv2d and Linear; "
        "weight mode) or of the --budget (FLOPs or params; channel mode).", parse=parse_target)
    budget: str = setting(
        "flops", "Channel mode: what the target removes a fraction of: fvcore's FLOPs, the "
        "parameters, or the latency in ONNX Runtime (a per-layer table).", choices=BUDGETS)
    latency_table: dict | None = setting(
        None, "With --budget latency: per-layer latencies (rlprune.latency/1 JSON) to use; "
        "default: measured here once per job (the run keeps it).", parse=read_latency_table,
        metavar="FILE")
    latency_batch: int = setting(32, "With --budget latency: the batch size it is measured at.",
                                 min=1, max=4096)
    criterion: str = setting(
        "l1", "Channel mode: which channels a group loses first: `l1` (filter L1 norm), "
        "`taylor` (|activation x gradient|), `similarity` (decisions.md: Settings)",
        choices=CRITERIA)
    round_to: int | str = setting(
        "auto", "Channel mode: a group keeps a multiple of N channels (or all); `auto`: 8 where "
        "every group has 16+, else 1 (decisions.md: Settings)",
        parse=parse_round_to, metavar="N|auto")
    scope: str = setting(
        "total", "`total`: the target covers every prunable weight; `agent`: the agent's "
        "layers only (the reference paper's setting).", choices=SCOPES)
    fc_rule: str = setting(
        "3sigma", "Who prunes the Linear layers: `3sigma`, the k-sigma rule; `agent`, the "
        "agent with the conv layers; `none`, nobody (left dense).", choices=FC_RULES)
    fc_k: float | str = setting(
        "auto", "The FC rule's k, or `auto`: the largest of 3, 2.5, 2, 1.5, 1 that fits the "
        "budget and costs at most 1 point of proxy accuracy (decisions.md: Settings)",
        parse=parse_k, metavar="K|auto")
    fc_during_search: bool = setting(
        True, "The FC masks are in place while the agent searches (the measured default); "
        "--fc-after-search applies them only afterwards, the reference order.",
        negate="--fc-after-search")
    s_min: float = setting(0.0, "The least an agent layer may prune.", min=0.0, max=1.0)
    s_max: float | str = setting(
        "auto", "The most a layer (group) may prune, or `auto`: 0.99, or as far as LAMP and ERK "
        "go; channels: 0.8 if it reaches the target (decisions.md: Settings)",
        parse=parse_s_max, metavar="S|auto")
    action_mapping: str = setting(
        "auto", "`absolute` (AMC's): onto [s_min, s_max], clamped; `feasible`: onto what the "
        "budget leaves; `auto`: by the layer sizes (decisions.md: Settings)",
        choices=ACTION_MAPPINGS, group="agent")
    reward: str = setting(
        "auto", "Score on val: `loss` (minus cross-entropy), `acc` (top-1), AMC's "
        "-err*log(...); `auto`: loss for weights, acc for channels (decisions.md: Settings)",
        choices=REWARDS)
    bn_recalibration_batches: int = setting(
        1, "Re-estimate BatchNorm statistics on this many train batches before scoring "
        "(0: off). Without it every random 0.9-sparse vgg-mini scored 10%.", min=0, max=10_000,
        flag="--bn-recalibration", metavar="BATCHES")
    bn_batch_size: int = setting(128, "Images per BatchNorm recalibration batch.", min=1,
                                 max=65536)
    bn_fixed_batches: bool = setting(
        True, "BatchNorm recalibrates on the same train batches every episode (the default); "
        "--bn-fresh-batches draws new ones (decisions.md: Settings)",
        negate="--bn-fresh-batches")
    eval_batch_size: int = setting(128, "Images per forward pass of the proxy evaluation.",
                                   min=1, max=65536)
    proxy: str = setting(
        "auto", "Proxy evaluation: `plain` (the model), `fast` (a copy, BN folded), "
        "`slim` (channels removed), `auto`: slim for channels (decisions.md: Settings)",
        choices=PROXY_PATHS)
    simulated_eval_s: float = setting(
        0.0, "Benchmarks: seconds of sleep added to every proxy evaluation, standing in for a "
        "large model's (the reward is unchanged).", min=0.0, max=3600.0,
        metavar="SECONDS")

    @property
    def proxy_path(self) -> str:
        """The proxy path `auto` stands for at this granularity."""
        if self.proxy != "auto":
            return self.proxy
        return granularity_named(self.granularity).proxy

    @property
    def reward_kind(self) -> str:
        """The reward `auto` stands for at this granularity."""
        if self.reward != "auto":
            return self.reward
        return granularity_named(self.granularity).reward

    def validate(self) -> None:
        if isinstance(self.target, bool) or not 0.0 < self.target < 1.0:
            raise SettingError("target", f"must be in (0, 1), got {self.target}")
        check(self)
        if self.latency_table is not None:
            from rlprune.env.latency_table import check_table

            check_table(self.latency_table, "`latency_table`")
        s_max = S_MAX_FLOOR if self.s_max == "auto" else self.s_max
        if isinstance(s_max, str) or not 0.0 <= self.s_min < s_max <= 1.0:
            raise UserError(f"need 0 <= s_min < s_max <= 1 (or s_max auto), got {self.s_min}, "
                            f"{self.s_max}")
        self._check_mode_settings()
        own = granularity_named(self.granularity)
        if self.proxy != "auto" and self.proxy not in own.proxies:
            users = [g for g in granularity_names() if self.proxy in
                     granularity_named(g).proxies]
            raise SettingError("proxy", f"{self.proxy} needs `granularity` "
                               f"{' or '.join(users)} (this job is {self.granularity})",
                               others=("granularity",))
        if (self.round_to != "auto" if isinstance(self.round_to, str)
                else isinstance(self.round_to, bool) or not 1 <= self.round_to <= 1024):
            raise SettingError("round_to", f"must be a whole number in [1, 1024] or auto, got "
                               f"{self.round_to!r}")
        if (self.fc_k != "auto" if isinstance(self.fc_k, str) else not 0 < self.fc_k <= 10):
            raise SettingError("fc_k", f"must be a number in (0, 10] or auto, got {self.fc_k!r}")

    def _check_mode_settings(self) -> None:
        """Refuse a setting of the other granularity given away from its default: it would be
        silently ignored."""
        for name, mode in settings_of_other_granularities(self.granularity).items():
            default = type(self).__dataclass_fields__[name].default
            if getattr(self, name) != default:
                raise SettingError(name, f"applies to `granularity` {mode} only (this job is "
                                   f"{self.granularity}); leave it at its default "
                                   f"{default!r}", others=("granularity",))
