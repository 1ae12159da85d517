"""Per-token losses of packed rows: what pretraining's validation and evaluation both measure."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from llmpipe.model.gpt import GPT
from llmpipe.train import runtime as rt
from llmpipe.train.data import Batch, PackedData


@torch.no_grad()
def token_nats(model: GPT, batch: Batch, runtime: rt.Runtime, document_mask: bool) -> torch.Tensor:
    """Cross-entropy of every target in nats, [B, T]; 0 where the target is padding."""
    batch = batch.to(runtime.device)
    with runtime.autocast():
        logits, _ = model(batch.inputs, segments=batch.segments if document_mask else None)
    nats = F.cross_entropy(
        logits.float().flatten(0, 1), batch.targets.flatten(), ignore_index=-1, reduction="none"
    )
    return nats.view_as(batch.targets)


def mean_loss(
    model: GPT, data: PackedData, runtime: rt.Runtime, batch_size: int, limit: int | None, document_mask: bool
) -> float:
    """Mean target loss over the first ``limit`` rows, summed over all ranks."""
    total, count = 0.0, 0
    for batch in data.sequential(batch_size, limit, runtime.rank, runtime.world):
        total += float(token_nats(model, batch, runtime, document_mask).sum())
        count += int((batch.targets >= 0).sum())
    total, count = runtime.all_sum(total, count)
    return total / max(count, 1)
