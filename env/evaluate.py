"""Proxy accuracy: the val split held as tensors on the device, scored in large batches."""

from __future__ import annotations

import torch
from torch import nn

from models.data import Split


class ProxyEvaluator:
    def __init__(self, val: Split, device: torch.device | str, batch_size: int = 2048):
        self.x = val.x.to(device)
        self.y = val.y.to(device)
        self.batch_size = batch_size

    @torch.inference_mode()
    def accuracy(self, model: nn.Module) -> float:
        model.eval()
        correct = torch.zeros((), dtype=torch.long, device=self.y.device)
        for i in range(0, len(self.y), self.batch_size):
            logits = model(self.x[i:i + self.batch_size])
            correct += (logits.argmax(1) == self.y[i:i + self.batch_size]).sum()
        return correct.item() / len(self.y)
