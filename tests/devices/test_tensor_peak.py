"""TensorPeak counts what operators allocate, once, and uncounts it when freed."""

from __future__ import annotations

import torch

from fedzo.devices.tensor_peak import TensorPeak


def test_counts_allocations_and_frees_but_not_views_or_in_place() -> None:
    w = torch.zeros(1000)  # exists before: never counted
    with TensorPeak() as tp:
        a = torch.ones(1000)  # 4000 B
        w.add_(a)  # in place: nothing new
        v = a.view(10, 100)  # a view: nothing new
        b = a * 2  # 4000 B more: 8000 at once
        del b
        c = a + 1  # 4000 B again, the peak stays 8000
        del a, v, c
        after = tp.live
    assert tp.peak == 8000
    assert after == 0


def test_backward_and_gradients_are_counted() -> None:
    x = torch.randn(64, 64, requires_grad=True)
    with TensorPeak() as tp:
        loss = (x @ x).sum()
        loss.backward()
    assert x.grad is not None
    assert tp.peak >= 2 * x.numel() * 4  # x @ x and the gradient of x


def test_measure_tracks_the_step_only_when_asked() -> None:
    import sys

    import pytest

    if not sys.platform.startswith("linux"):
        pytest.skip("reads /proc")
    from fedzo.devices.validate import ValidationCase, measure

    case = ValidationCase("tiny-llama", "zo", 8, 64)
    assert measure(case, tensors=False)["tensors"] is None  # the fleet's measured memory reads only the RSS
    assert measure(case)["tensors"] > 0
