"""Partitioning over clients with flwr-datasets partitioners."""

from __future__ import annotations

import random

import pytest

from fedzo.errors import ConfigError
from fedzo.tasks.partition import PARTITIONERS, label_histogram, partition

_RNG = random.Random(0)
LABELS = [_RNG.randrange(3) for _ in range(600)]


@pytest.mark.parametrize("kind", PARTITIONERS.names())
@pytest.mark.parametrize("num_clients", [1, 4, 7])
def test_parts_cover_the_dataset_exactly_once(kind, num_clients):
    parts = partition(LABELS, num_clients, kind, classes_per_client=3, seed=1)
    assert len(parts) == num_clients
    flat = sorted(i for p in parts for i in p)
    assert flat == list(range(len(LABELS)))


@pytest.mark.parametrize("kind", PARTITIONERS.names())
def test_same_seed_same_parts(kind):
    a = partition(LABELS, 5, kind, seed=3)
    assert a == partition(LABELS, 5, kind, seed=3)


def _skew(alpha: float) -> float:
    """Mean over clients of the largest class share (1/3 is uniform, 1 is one class)."""
    values = []
    for seed in range(3):
        hist = label_histogram(LABELS, partition(LABELS, 6, "dirichlet", alpha=alpha, seed=seed))
        values += [max(row) / sum(row) for row in hist if sum(row)]
    return sum(values) / len(values)


def test_dirichlet_skew_grows_as_alpha_shrinks():
    assert _skew(0.1) > _skew(1.0) > _skew(100.0)
    assert _skew(100.0) < 0.45


def test_pathological_gives_each_client_its_classes():
    hist = label_histogram(LABELS, partition(LABELS, 6, "pathological", classes_per_client=1))
    assert all(sum(1 for c in row if c) == 1 for row in hist)


def test_iid_is_balanced():
    sizes = [len(p) for p in partition(LABELS, 7, "iid")]
    assert max(sizes) - min(sizes) <= 1


def test_label_histogram_counts():
    assert label_histogram([0, 1, 1, 2], [[0, 1], [2, 3]]) == [[1, 1, 0], [0, 1, 1]]


def test_bad_arguments_are_config_errors():
    with pytest.raises(ConfigError, match="not a known partitioner; allowed: iid, dirichlet"):
        partition(LABELS, 2, "random")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="num_clients"):
        partition(LABELS, 0)
    with pytest.raises(ConfigError, match="left out"):
        partition(LABELS, 1, "pathological", classes_per_client=1)
