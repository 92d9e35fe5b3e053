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
        "weight", "`weight`: per-layer weight sparsity (masks); `channel`: whole channels "
        "removed (a smaller network).", choices=granularity_names, section="budget")
    target: float = setting(
        0.9, "The fraction to remove, in (0, 1): of the prunable weights (weight mode) or of "
        "--budget (channel mode).", parse=parse_target, section="budget")
    budget: str = setting(
        "flops", "Channel mode: what --target is a fraction of: FLOPs, parameters, or ONNX "
        "Runtime latency.", choices=BUDGETS, section="budget")
    latency_table: dict | None = setting(
        None, "With --budget latency: a per-layer latency table (JSON) to use instead of "
        "measuring one.", parse=read_latency_table, metavar="FILE", section="budget")
    latency_batch: int = setting(32, "With --budget latency: the batch size latency is "
                                 "measured at.", min=1, max=4096, section="budget")
    criterion: str = setting(
        "l1", "Channel mode: which channels a group loses first.", choices=CRITERIA,
        section="budget")
    round_to: int | str = setting(
        "auto", "Channel mode: a group keeps a multiple of N channels, or all of them.",
        parse=parse_round_to, metavar="N|auto", section="budget")
    scope: str = setting(
        "total", "What the target covers: every prunable weight, or the agent's layers only.",
        choices=SCOPES, section="budget")
    fc_rule: str = setting(
        "3sigma", "Who prunes the Linear layers: the k-sigma rule, the agent, or none (left "
        "dense).", choices=FC_RULES, section="budget")
    fc_k: float | str = setting(
        "auto", "The FC rule's k (auto: the largest of 3 to 1 that fits the budget).",
        parse=parse_k, metavar="K|auto", section="budget")
    fc_during_search: bool = setting(
        True, "Apply the FC rule's masks after the search (the reference order), not during "
        "it.", negate="--fc-after-search", section="budget")
    s_min: float = setting(0.0, "The least an agent layer may prune.", min=0.0, max=1.0,
                           section="budget")
    s_max: float | str = setting(
        "auto", "The most a layer (group) may prune, or auto (from the granularity and the "
        "target).", parse=parse_s_max, metavar="S|auto", section="budget")
    action_mapping: str = setting(
        "auto", "How an action becomes a sparsity: onto [s_min, s_max] (AMC's) or onto what "
        "the budget leaves.", choices=ACTION_MAPPINGS, group="agent", section="search")
    reward: str = setting(
        "auto", "An episode's score on val (auto: loss in weight mode, acc in channel mode).",
        choices=REWARDS, section="reward")
    bn_recalibration_batches: int = setting(
        1, "Train batches BatchNorm statistics are re-estimated on before each score (0: "
        "off).", min=0, max=10_000, flag="--bn-recalibration", metavar="BATCHES",
        section="reward")
    bn_batch_size: int = setting(128, "Images per BatchNorm recalibration batch.", min=1,
                                 max=65536, section="reward")
    bn_fixed_batches: bool = setting(
        True, "Recalibrate BatchNorm on fresh train batches every episode, not the same ones.",
        negate="--bn-fresh-batches", section="reward")
    eval_batch_size: int = setting(128, "Images per forward pass of the proxy evaluation.",
                                   min=1, max=65536, section="reward")
    proxy: str = setting(
        "auto", "How the proxy is run: the model, a BN-folded copy (fast) or the slim network "
        "(channel mode).", choices=PROXY_PATHS, section="reward")
    simulated_eval_s: float = setting(
        0.0, "Benchmarks: seconds of sleep added to every proxy evaluation.", min=0.0,
        max=3600.0, metavar="SECONDS", section="reward")

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
