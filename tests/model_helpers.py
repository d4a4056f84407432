"""Model helpers shared by the model, head and export tests."""

from __future__ import annotations

import torch
from torch import nn


def randomize_weights(model: nn.Module, seed: int = 0, scale: float = 0.3) -> nn.Module:
    """Random values for every parameter (biases and LayerNorms included), seeded; padding rows stay zero, as
    training keeps them (``padding_idx`` rows get no gradient). Returns the model in eval mode."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * scale)
        for module in model.modules():
            if isinstance(module, nn.Embedding) and module.padding_idx is not None:
                module.weight[module.padding_idx] = 0.0
    return model.eval()
