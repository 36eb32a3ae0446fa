"""The names the plug-in registries allow, for the schema to check without importing the
code behind them.

Configuration holds names, not code: a scenario is validated against these tuples, and
the runtime looks each name up in its registry (:data:`fedzo.federation.catchup.CATCH_UP_POLICIES`,
:data:`fedzo.federation.server.aggregate.AGGREGATORS`,
:data:`fedzo.zo.server_optimizers.SERVER_OPTIMIZERS`). ``tests/test_config.py`` keeps
each tuple equal to its registry's names, so a plug-in added to a registry is added here.
"""

from __future__ import annotations

from collections.abc import Sequence

CATCH_UP_POLICIES = ("replay", "seed_pool", "full", "auto")
AGGREGATORS = ("mean", "median", "trimmed-mean")
SERVER_OPTIMIZERS = ("none", "momentum", "adam")
STATEFUL_SERVER_OPTIMIZERS = ("momentum", "adam")  # keep dense buffers that clients rebuild


def check_name(kind: str, names: Sequence[str], value: str) -> str:
    """``value`` if it is one of ``names`` (for schema validators), else a ValueError that
    lists them."""
    if value not in names:
        raise ValueError(f"is not a known {kind}; allowed: {', '.join(names)}")
    return value
