"""The trainer ceiling: a bare PyTorch loop of the benchmark's CLIP on one batch already in memory.

    python -m benchmarks.peers.bare_loop STEPS [BATCH]

The same model (``memelab-tiny-vit`` at 64 px, fp32), batch and optimiser (AdamW) as the trainers
compared, and nothing else: forward, the symmetric contrastive loss (Radford et al. 2021), backward,
step. No data loading, no clipping, no logging, no scheduler: what a training step costs on this machine.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from benchmarks.peers.common import IMAGE_SIZE, MODEL, tokenizer


def main(argv: Sequence[str]) -> int:
    steps, batch = int(argv[0]), int(argv[1]) if len(argv) > 1 else 64
    from nbhelpers.models.clip import create_clip

    torch.manual_seed(0)
    model = create_clip(MODEL)[0].train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    images = torch.randn(batch, 3, IMAGE_SIZE, IMAGE_SIZE)
    tokens = tokenizer()([f"a picture of thing number {i}" for i in range(batch)])
    targets = torch.arange(batch)
    for _ in range(steps):
        image_features, text_features, scale = model(images, tokens)[:3]
        logits = scale * image_features @ text_features.T  # (batch, batch)
        loss = (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
