"""What a CPU makes of fewer FLOPs in a vgg-mini-shaped network, without rlprune in the way.

    python docs/studies/width_speed.py [threads=2]

vgg-mini's layer plan built fresh in plain torch (eager, untrained) at full width and with
every layer's channels scaled by 0.71 and 0.5 (about 2x and 4x fewer FLOPs), timed one after
the other at batch 32 (median after warm-up, as `rlprune` times its models). The ratio
speedup / FLOPs reduction is the share of a channel cut this CPU turns into time.
"""

from __future__ import annotations

import sys

import torch
from torch import nn

from rlprune.env.channels import network_flops
from rlprune.service.measure import latency_ms

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


def main(argv: list[str]) -> None:
    opts = dict(a.split("=", 1) for a in argv)
    torch.set_num_threads(int(opts.get("threads", "2")))
    rows = []
    for scale in (1.0, 0.71, 0.5):
        model = vgg([max(1, round(w * scale)) for w in FULL])
        rows.append((scale, network_flops(model, (1, 28, 28)),
                     latency_ms(model, (1, 28, 28), 32, repeats=50, budget_s=10)))
    flops0, ms0 = rows[0][1], rows[0][2]
    print("| width | FLOPs (M) | batch 32 (ms) | FLOPs reduction | speedup | share |")
    print("|---|---:|---:|---:|---:|---:|")
    for scale, flops, ms in rows:
        print(f"| x{scale:g} | {flops / 1e6:.2f} | {ms:.2f} | {flops0 / flops:.2f}x | "
              f"{ms0 / ms:.2f}x | {(ms0 / ms) / (flops0 / flops):.2f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
