"""Accuracy of float and fake-quant models (top-1, top-5, cross-entropy loss)."""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Iterable

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


def _labels(batch) -> torch.Tensor:
    from repq_hw.execution import FolderBatch

    if isinstance(batch, FolderBatch):
        return torch.tensor(batch.labels, dtype=torch.int64)
    return batch[1]


@torch.no_grad()
def accuracy_of(logits: Iterable[torch.Tensor], labels: Iterable[torch.Tensor]) -> Accuracy:
    """Accuracy of per-batch logits against per-batch labels, summed batch by batch in order (the same
    float additions whichever process computed the logits)."""
    correct1 = correct5 = 0
    loss_sum, n = 0.0, 0
    for lg, y in zip(logits, labels, strict=True):
        loss_sum += F.cross_entropy(lg, y, reduction="sum").item()
        k = min(5, lg.shape[1])
        topk = lg.topk(k, dim=1).indices
        correct1 += (topk[:, 0] == y).sum().item()
        correct5 += (topk == y[:, None]).any(dim=1).sum().item()
        n += len(y)
    if n == 0:
        raise ValueError("evaluation data is empty")
    return Accuracy(100.0 * correct1 / n, 100.0 * correct5 / n, loss_sum / n, n)


@torch.no_grad()
def evaluate(model: torch.nn.Module, data: Iterable, desc: str = "eval", progress: bool = True,
             total: int | None = None, runner=None) -> tuple[Accuracy, torch.Tensor]:
    """Evaluate over (images, labels) batches. Returns (accuracy, logits of every image).

    Args:
        runner: a started :class:`repq_hw.execution.Runner` with a cluster: the batches are evaluated on
            its workers (the model is broadcast once) and merged in batch order; None or an in-process
            runner evaluates here. ``data`` may then also hold ``FolderBatch`` items (decoded on the workers).
    """
    model.eval()
    if runner is not None and runner.distributed:
        batches = list(data)
        logits = runner.torch_logits(model, batches, desc=desc)
        labels = [_labels(b) for b in batches]
    else:
        logits, labels = [], []
        for b in tqdm(data, desc=desc, total=total, disable=not progress, leave=False, unit="batch"):
            x = b.load()[0] if not isinstance(b, (tuple, list)) else b[0]
            logits.append(model(x))
            labels.append(_labels(b))
    acc = accuracy_of(logits, labels)
    return acc, torch.cat(logits)
