"""FederationConfig refuses what the protocol cannot do, naming the option."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from fedzo.federation.config import FederationConfig


@pytest.mark.parametrize(("kw", "match"), [
    (dict(optimizer="zo-adam"), "zo-adam.*allowed: zo-sgd"),
    (dict(catch_up="seed_pool", schedule="cosine"), "constant lr"),
    (dict(catch_up="seed_pool", q=2), "q: 1"),
    (dict(clients_per_round=3, participation=0.5), "choose one"),
    (dict(num_clients=2, min_clients=3), "min_clients"),
    (dict(bogus=1), "bogus"),
])
def test_illegal_settings_are_refused(kw, match) -> None:
    with pytest.raises(ValidationError, match=match):
        FederationConfig(**kw)


def test_participants() -> None:
    assert FederationConfig(num_clients=10, participation=0.3).participants == 3
    assert FederationConfig(num_clients=10).participants == 10
