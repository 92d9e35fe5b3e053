"""What a CPU makes of fewer FLOPs in a vgg-mini-shaped network, without rlprune in the way.

    python studies/width_speed.py [threads=2] [profile=1] [batch=32] [repeats=50]

vgg-mini's layer plan built fresh in plain torch (eager, untrained) at full width and with
every layer's channels scaled by 0.71 and 0.5 (about 2x and 4x fewer FLOPs: multiply-adds of
the convolutions and linear layers, torch's FLOP counter / 2), timed one after the other at
batch 32 (median of `repeats` after warm-up, as `rlprune` times its models). The ratio
speedup / FLOPs reduction is the share of a channel cut this CPU turns into time. With
profile=1, also where batch 32's time goes at each width (torch.profiler, self CPU time per
operator kind, 20 passes after warm-up).
"""

from __future__ import annotations

import sys
from collections import defaultdict

import torch
from study_tools import latency_ms
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

FULL = [16, 16, 32, 32, 64, 64, 128, 128]  # vgg-mini's convolutions (models/registry.py)


def vgg(widths: list[int]) -> nn.Module:
    layers, c = [], 1
    for i, out in enumerate(widths):
        layers += [nn.Conv2d(c, out, 3, padding=1), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
        if i % 2 == 1 and i < len(widths) - 1:
            layers.append(nn.MaxPool2d(2))
        c = out
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 128),
                         nn.ReLU(), nn.Linear(128, 10)).eval()


KINDS = {"conv": ("convolution", "mkldnn"), "batch norm": ("batch_norm",),
         "relu": ("relu",), "pooling": ("pool",), "linear": ("addmm", "linear", "mm")}


def network_flops(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-adds of one image's forward pass (convolutions and matrix products)."""
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        model(torch.zeros(1, *input_shape))
    return counter.get_total_flops() // 2


def time_shares(model: nn.Module, batch: int = 32, passes: int = 20) -> dict[str, float]:
    """Self CPU time per operator kind (fraction of the total) of batch-`batch` forward
    passes."""
    x = torch.randn(batch, 1, 28, 28)
    with torch.inference_mode():
        for _ in range(5):
            model(x)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            for _ in range(passes):
                model(x)
    shares: dict[str, float] = defaultdict(float)
    for event in prof.key_averages():
        kind = next((k for k, keys in KINDS.items() if any(w in event.key for w in keys)),
                    "other")
        shares[kind] += event.self_cpu_time_total
    total = sum(shares.values())
    return {k: v / total for k, v in sorted(shares.items())}


def main(argv: list[str]) -> None:
    opts = dict(a.split("=", 1) for a in argv)
    torch.set_num_threads(int(opts.get("threads", "2")))
    batch, repeats = int(opts.get("batch", "32")), int(opts.get("repeats", "50"))
    models = {scale: vgg([max(1, round(w * scale)) for w in FULL]) for scale in (1.0, 0.71, 0.5)}
    rows = [(scale, network_flops(model, (1, 28, 28)),
             latency_ms(model, (1, 28, 28), batch, repeats=repeats, budget_s=10))
            for scale, model in models.items()]
    flops0, ms0 = rows[0][1], rows[0][2]
    print(f"| width | FLOPs (M) | batch {batch} (ms) | FLOPs reduction | speedup | share |")
    print("|---|---:|---:|---:|---:|---:|")
    for scale, flops, ms in rows:
        print(f"| x{scale:g} | {flops / 1e6:.2f} | {ms:.2f} | {flops0 / flops:.2f}x | "
              f"{ms0 / ms:.2f}x | {(ms0 / ms) / (flops0 / flops):.2f} |")
    if opts.get("profile") == "1":
        for scale, model in models.items():
            shares = time_shares(model, batch)
            print(f"x{scale:g}: " + ", ".join(f"{k} {v:.0%}" for k, v in shares.items()))


if __name__ == "__main__":
    main(sys.argv[1:])
