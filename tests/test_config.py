"""The configuration sections: what each refuses, named; shared by centralized and federated runs."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from fedzo.config.federation import FederationConfig
from fedzo.config.scenario import Scenario
from fedzo.config.sections import DataConfig, ModelConfig, OptimizerConfig, RuntimeConfig, ZOConfig
from fedzo.config.train import TrainConfig
from fedzo.zo.optimizers import OPTIMIZERS, optimizer_names


@pytest.mark.parametrize(("kw", "match"), [
    ({"clients_per_round": 3, "participation": 0.5}, "choose one"),
    ({"num_clients": 2, "min_clients": 3}, "min_clients"),
    ({"catch_up": "seed_pool", "seed_pool_size": 2, "local_steps": 5}, "seed_pool_size"),
    ({"aggregator": "mode"}, "not a known aggregator"),
    ({"partition": "random"}, "not a known partitioner"),
    ({"bogus": 1}, "bogus"),
])
def test_federation_refuses_what_the_protocol_cannot_do(kw, match) -> None:
    with pytest.raises(ValidationError, match=match):
        FederationConfig(**kw)


def test_participants() -> None:
    assert FederationConfig(num_clients=10, participation=0.3).participants == 3
    assert FederationConfig(num_clients=10).participants == 10


def test_centralized_and_federated_runs_share_the_same_sections() -> None:
    shared = ("model", "data", "zo", "optimizer", "runtime")
    for name in shared:
        assert Scenario.model_fields[name].annotation is TrainConfig.model_fields[name].annotation
    assert Scenario().model.name == TrainConfig().model.name == ModelConfig().name == "smollm2-135m"
    assert Scenario().runtime == TrainConfig().runtime == RuntimeConfig()
    assert DataConfig().task == "rotten-tomatoes" and ZOConfig().estimator == "central"


def test_allowed_optimizer_names_derive_from_the_registry() -> None:
    assert set(optimizer_names()) == set(OPTIMIZERS.names())
    for name, info in OPTIMIZERS.items():
        OptimizerConfig(name=name)  # every registered optimizer is a valid name
        if info.federated:
            Scenario(optimizer=OptimizerConfig(name=name))
        else:
            with pytest.raises(ValidationError, match="cannot run federated"):
                Scenario(optimizer=OptimizerConfig(name=name))


def test_hybrid_needs_a_zo_optimizer() -> None:
    with pytest.raises(ValidationError, match="hybrid_fo needs a zo"):
        OptimizerConfig(name="fo-adam", hybrid_fo="head")
    with pytest.raises(ValidationError, match="zo-sgd-mmt cannot be combined with zo.blockwise"):
        TrainConfig(optimizer=OptimizerConfig(name="zo-sgd-mmt"), zo=ZOConfig(blockwise=True))


def test_precision_is_checked_against_the_device(tmp_path) -> None:
    """fp16 needs CUDA: refused with runtime.device cpu when the file is read, and where the run
    starts when ``auto`` finds no GPU; an unknown dtype lists the allowed ones."""
    import torch

    from fedzo.config.scenario import load_scenario
    from fedzo.errors import ConfigError, ScenarioError
    from fedzo.tasks.objective import resolve_dtype

    path = tmp_path / "half.yaml"
    path.write_text("version: 2\nmodel: {name: tiny-llama, dtype: fp16}\nruntime: {device: cpu}\n")
    with pytest.raises(ScenarioError, match=r"half\.yaml.*model\.dtype: 'fp16' needs a CUDA device.*allowed on CPU: fp32, bf16"):
        load_scenario(path)
    with pytest.raises(ValidationError, match="model.dtype: 'fp16' needs a CUDA device"):
        TrainConfig.model_validate({"model": {"dtype": "fp16"}, "runtime": {"device": "cpu"}})
    with pytest.raises(ValidationError, match="'fp32', 'bf16' or 'fp16'"):
        ModelConfig(dtype="fp8")  # type: ignore[arg-type]
    assert resolve_dtype("bf16", torch.device("cpu")) is torch.bfloat16
    with pytest.raises(ConfigError, match="'fp16' needs a CUDA device, but training runs on cpu"):
        resolve_dtype("fp16", torch.device("cpu"))



def test_label_names_may_be_numbers_and_label_map_excludes_them() -> None:
    assert DataConfig(label_names=[1, 3, 5]).task_options().label_names == ("1", "3", "5")
    opts = DataConfig(label_map={1: "bad", 3: "ok", "5": "good"}, encoding="latin-1").task_options()
    assert opts.label_map == {1: "bad", 3: "ok", "5": "good"} and opts.encoding == "latin-1"
    with pytest.raises(ValidationError, match="give data.label_map or data.label_names, not both"):
        DataConfig(label_names=["a"], label_map={1: "a"})


def test_the_names_config_checks_are_the_registries_names() -> None:
    from fedzo.config import names
    from fedzo.federation.catchup import CATCH_UP_POLICIES
    from fedzo.federation.server.aggregate import AGGREGATORS
    from fedzo.zo.server_optimizers import SERVER_OPTIMIZERS

    assert names.CATCH_UP_POLICIES == CATCH_UP_POLICIES.names()
    assert names.AGGREGATORS == AGGREGATORS.names()
    assert names.SERVER_OPTIMIZERS == SERVER_OPTIMIZERS.names()
    assert set(names.STATEFUL_SERVER_OPTIMIZERS) == {n for n, cls in SERVER_OPTIMIZERS.items() if cls.buffers}
    with pytest.raises(ValueError, match="allowed: mean, median, trimmed-mean"):
        names.check_name("aggregator", names.AGGREGATORS, "krum")
