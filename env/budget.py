"""The two-sided budget clamp that makes every episode land exactly on the target.

All arithmetic is in whole weights. With W_t this layer's weights, P the weights the agent has
pruned so far, R the later agent layers, F the weights removed outside the agent (the FC rule),
N the prunable weights in scope and T the target, layer t may prune between
`T·N − F − P − max(R)` and `T·N − F − P − min(R)` weights (then within its own
[s_min·W_t, s_max·W_t]). Whatever the agent asks, the remaining budget stays reachable, so the
last layer closes it exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rlprune.env.masks import count_for
from rlprune.models.errors import SettingError

# the settings a refused target's message may name besides the target (in backticks): its fixes
FIX_SETTINGS = ("fc_k", "fc_rule", "s_min")


@dataclass
class Budget:
    target: float
    total: int  # N: prunable weights in scope
    fixed: int  # F: weights pruned outside the agent, inside the scope
    sizes: list[int]  # W_t of the agent's layers, in order
    s_min: float = 0.0
    s_max: float = 0.99
    lows: list[int] = field(init=False)
    highs: list[int] = field(init=False)

    def __post_init__(self) -> None:
        self.lows = [count_for(w, self.s_min) for w in self.sizes]
        self.highs = [count_for(w, self.s_max) for w in self.sizes]

    @property
    def goal(self) -> int:
        """Weights the whole episode prunes in scope: round(T·N)."""
        return int(round(self.target * self.total))

    @property
    def agent_goal(self) -> int:
        return self.goal - self.fixed

    def check(self, fix: str = "lower `target`") -> None:
        """Refuse targets the agent cannot reach, with the numbers that say why; `fix` ends
        the message of a target the agent's layers cannot hold (settings in backticks, as
        `SettingError` names them)."""
        if not self.sizes:
            raise no_agent_layers_error()
        if self.agent_goal < 0:
            raise SettingError(
                "target", f"the FC rule alone prunes {self.fixed:,} weights, more than the "
                f"target {self.target:g} allows ({self.goal:,} of {self.total:,}); lower "
                "`fc_k`, use `fc_k` auto, or raise the target", others=FIX_SETTINGS, lead=False)
        if self.agent_goal > sum(self.highs):
            raise SettingError(
                "target", f"target {self.target:g} needs {self.agent_goal:,} weights from the "
                f"agent's layers but at most {sum(self.highs):,} can go at s_max="
                f"{self.s_max:g}; {fix}", others=FIX_SETTINGS, lead=False)
        if self.agent_goal < sum(self.lows):
            raise SettingError("target", f"target {self.target:g} is below what s_min="
                               f"{self.s_min:g} prunes; raise `target` or lower `s_min`",
                               others=FIX_SETTINGS, lead=False)

    def bounds(self, t: int, pruned: int) -> tuple[int, int]:
        """The fewest and most weights layer t may prune, given `pruned` by the agent so far."""
        left = self.agent_goal - pruned
        lo = max(self.lows[t], left - sum(self.highs[t + 1:]))
        hi = min(self.highs[t], left - sum(self.lows[t + 1:]))
        return lo, max(lo, hi)

    def clamp(self, t: int, pruned: int, sparsity: float) -> int:
        """Weights layer t prunes when the agent asks for `sparsity`."""
        lo, hi = self.bounds(t, pruned)
        return min(hi, max(lo, count_for(self.sizes[t], sparsity)))


def no_agent_layers_error() -> SettingError:
    return SettingError("fc_rule", "the agent controls no layers (no Conv2d here); use "
                        "`fc_rule` agent to let it prune the Linear layers", lead=False)
