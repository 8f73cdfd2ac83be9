"""Accuracy of float and fake-quant models (top-1, top-5, cross-entropy loss)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm


@dataclass(frozen=True)
class Accuracy:
    top1: float  # percent
    top5: float  # percent
    loss: float  # mean cross-entropy
    n: int

    def row(self) -> str:
        return f"top1 {self.top1:6.2f}%  top5 {self.top5:6.2f}%  loss {self.loss:.4f}  (n={self.n})"


def batches(images: torch.Tensor, labels: torch.Tensor, batch_size: int) -> Iterable:
    for i in range(0, len(images), batch_size):
        yield images[i : i + batch_size], labels[i : i + batch_size]


@torch.no_grad()
def evaluate(model: torch.nn.Module, data: Iterable, desc: str = "eval", progress: bool = True,
             total: int | None = None) -> tuple[Accuracy, torch.Tensor]:
    """Evaluate over (images, labels) batches. Returns (accuracy, logits of every image)."""
    model.eval()
    correct1 = correct5 = 0
    loss_sum, n = 0.0, 0
    all_logits = []
    for x, y in tqdm(data, desc=desc, total=total, disable=not progress, leave=False, unit="batch"):
        logits = model(x)
        all_logits.append(logits)
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        k = min(5, logits.shape[1])
        topk = logits.topk(k, dim=1).indices
        correct1 += (topk[:, 0] == y).sum().item()
        correct5 += (topk == y[:, None]).any(dim=1).sum().item()
        n += len(y)
    if n == 0:
        raise ValueError("evaluation data is empty")
    acc = Accuracy(100.0 * correct1 / n, 100.0 * correct5 / n, loss_sum / n, n)
    return acc, torch.cat(all_logits)
