"""Small deterministic problems for the ZO core tests."""

from __future__ import annotations

import pytest
import torch
from torch import nn


class TinyRegressor(nn.Module):
    """A 2-layer MLP: big enough to have several tensors, small enough to be instant."""

    def __init__(self, d_in: int = 8, hidden: int = 16) -> None:
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(d_in, hidden), nn.Linear(hidden, 1)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers[1](torch.tanh(self.layers[0](x))).squeeze(-1)


@pytest.fixture
def regression() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """(model, x, y) for a fixed synthetic regression problem."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 8, generator=g)
    y = torch.sin(x[:, 0]) + 0.5 * x[:, 1]
    torch.manual_seed(0)
    return TinyRegressor(), x, y
