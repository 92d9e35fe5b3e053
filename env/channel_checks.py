"""Whether a channel policy fits a model: it removes channels by index, so it fits only the
architecture it was found on, and its groups must be the model's."""

from __future__ import annotations

from torch import nn

from rlprune.env.channels import ChannelGraph
from rlprune.models.errors import UserError


def check_fingerprint(model: nn.Module, policy: dict) -> None:
    """Refuse a channel policy searched on another architecture: it removes channels by
    index, so it fits only the network it was found on (parameter names and shapes)."""
    from rlprune.models.registry import arch_fingerprint

    theirs, mine = policy.get("arch_fingerprint"), arch_fingerprint(model)
    if theirs is not None and theirs != mine:
        raise UserError(f"channel policy does not fit the model: it was found on another "
                        f"architecture (fingerprint {str(theirs)[:19]}..., the model's "
                        f"{mine[:19]}...)")


def check_channel_policy(model: nn.Module, input_shape: tuple[int, ...], policy: dict) -> None:
    """Refuse a channel policy whose architecture or groups are not `model`'s (fingerprint,
    group names and channel counts)."""
    check_fingerprint(model, policy)
    graph = ChannelGraph(model, input_shape)
    mine = {g.name: g.channels for g in graph.groups}
    problems = []
    for group in policy["groups"]:
        if group["name"] not in mine:
            problems.append(f"{group['name']} (not a channel group of the model)")
        elif mine[group["name"]] != group["channels"]:
            problems.append(f"{group['name']} ({mine[group['name']]} channels, policy says "
                            f"{group['channels']})")
    if problems:
        raise UserError("channel policy does not fit the model: " + ", ".join(problems[:5])
                        + (" …" if len(problems) > 5 else ""))
