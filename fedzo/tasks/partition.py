"""Splitting a training set over clients with flwr-datasets partitioners.

The labels become a local ``datasets.Dataset`` (columns ``label`` and ``index``); a
partitioner assigns rows to clients and we return each client's example indices.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from fedzo.errors import ConfigError
from fedzo.registry import Registry

__all__ = ["PARTITIONERS", "label_histogram", "partition"]

log = logging.getLogger(__name__)



Partitioner = Callable[[int, float, int, int], Any]  # (clients, alpha, classes per client, seed)
PARTITIONERS: Registry[Partitioner] = Registry("partitioner", "federation.partition")


@PARTITIONERS.register("iid")
def _iid(num_clients: int, alpha: float, classes_per_client: int, seed: int) -> Any:
    from flwr_datasets import partitioner as fp

    return fp.IidPartitioner(num_partitions=num_clients)


@PARTITIONERS.register("dirichlet")
def _dirichlet(num_clients: int, alpha: float, classes_per_client: int, seed: int) -> Any:
    from flwr_datasets import partitioner as fp

    return fp.DirichletPartitioner(
        num_partitions=num_clients, partition_by="label", alpha=alpha,
        min_partition_size=1, self_balancing=False, shuffle=True, seed=seed,
    )


@PARTITIONERS.register("pathological")
def _pathological(num_clients: int, alpha: float, classes_per_client: int, seed: int) -> Any:
    from flwr_datasets import partitioner as fp

    return fp.PathologicalPartitioner(
        num_partitions=num_clients, partition_by="label",
        num_classes_per_partition=classes_per_client,
        class_assignment_mode="first-deterministic", shuffle=True, seed=seed,
    )


@PARTITIONERS.register("shard")
def _shard(num_clients: int, alpha: float, classes_per_client: int, seed: int) -> Any:
    from flwr_datasets import partitioner as fp

    return fp.ShardPartitioner(
        num_partitions=num_clients, partition_by="label",
        num_shards_per_partition=classes_per_client, keep_incomplete_shard=False,
        shuffle=True, seed=seed,
    )


def partition(
    labels: Sequence[int],
    num_clients: int,
    kind: str = "iid",
    *,
    alpha: float = 0.5,
    classes_per_client: int = 2,
    seed: int = 0,
) -> list[list[int]]:
    """Example indices per client; deterministic for a seed.

    - ``iid``: equal shares in a shuffled order (the shuffle uses ``seed``).
    - ``dirichlet``: per-class shares drawn from Dirichlet(``alpha``); smaller alpha, more skew.
    - ``pathological``: each client holds ``classes_per_client`` classes (assigned in turn).
    - ``shard``: rows sorted by label cut into equal shards, ``classes_per_client`` shards per
      client; the few rows left over (less than one shard) are dealt to clients in turn.
    """
    from datasets import Dataset

    if num_clients < 1 or num_clients > len(labels):
        raise ConfigError(f"num_clients {num_clients} must be between 1 and the {len(labels)} examples")
    if kind == "dirichlet" and alpha <= 0:
        raise ConfigError(f"dirichlet alpha {alpha} must be > 0")
    if kind in ("pathological", "shard") and classes_per_client < 1:
        raise ConfigError(f"classes_per_client {classes_per_client} must be >= 1")
    data = Dataset.from_dict({"label": list(labels), "index": list(range(len(labels)))})
    if kind == "iid":
        data = data.shuffle(seed=seed)
    part = PARTITIONERS.get(kind)(num_clients, alpha, classes_per_client, seed)
    part.dataset = data
    with warnings.catch_warnings(record=True) as caught:  # flwr-datasets warns once per redraw
        warnings.simplefilter("always")
        try:
            parts = [sorted(part.load_partition(i)["index"]) for i in range(num_clients)]
        except ValueError as exc:
            raise ConfigError(
                f"partition kind {kind!r} with {num_clients} clients failed on {len(labels)} examples: {exc}"
            ) from exc
    redraws = sum("min_partition_size" in str(w.message) for w in caught)
    for w in caught:
        if "min_partition_size" not in str(w.message):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if redraws:
        log.info("partition %s (alpha %g): %d draws until every one of %d clients held an example; the smallest "
                 "holds %d", kind, alpha, redraws + 1, num_clients, min(len(p) for p in parts))
    if kind == "shard":
        _deal_leftovers(parts, len(labels), seed)
    covered = sum(len(p) for p in parts)
    if covered != len(labels):
        raise ConfigError(
            f"partition kind {kind!r} assigned {covered} of {len(labels)} examples; with "
            f"{num_clients} clients x classes_per_client {classes_per_client} some classes are "
            "left out. Raise classes_per_client or num_clients"
        )
    return parts


def _deal_leftovers(parts: list[list[int]], n: int, seed: int) -> None:
    """Give rows no shard took (fewer than one shard) to clients in turn, from a seeded start."""
    taken = {i for p in parts for i in p}
    leftover = [i for i in range(n) if i not in taken]
    start = seed % len(parts)
    for k, i in enumerate(leftover):
        parts[(start + k) % len(parts)].append(i)
    for p in parts:
        p.sort()


def label_histogram(labels: Sequence[int], parts: Sequence[Sequence[int]]) -> list[list[int]]:
    """Count of each label (columns 0..max label) in each client's part (rows)."""
    num_labels = max(labels) + 1 if len(labels) else 0
    hist = []
    for idx in parts:
        row = [0] * num_labels
        for i in idx:
            row[labels[i]] += 1
        hist.append(row)
    return hist
