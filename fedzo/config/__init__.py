"""Configuration: typed, frozen sections composed into a scenario or a centralized run.

``sections`` (model, data, zo, optimizer, runtime: shared by every run), ``federation``,
``fleet`` and ``faults`` (federated runs), ``scenario`` (a federated experiment),
``train`` (a centralized run), ``migrate`` (the older flat format), ``validation``
(errors that name file, key, value and what is allowed), ``reference`` (the generated
scenario reference).
"""

from fedzo.config.faults import ByzantineConfig, FaultsConfig
from fedzo.config.federation import FederationConfig
from fedzo.config.fleet import DeviceGroup, FleetConfig
from fedzo.config.scenario import Scenario, load_scenario, scenario_from_dict
from fedzo.config.sections import DataConfig, ModelConfig, OptimizerConfig, RuntimeConfig, ZOConfig
from fedzo.config.train import TrainConfig, train_config_from_dict
from fedzo.config.validation import read_yaml, validate

__all__ = [
    "ByzantineConfig", "DataConfig", "DeviceGroup", "FaultsConfig", "FederationConfig", "FleetConfig",
    "ModelConfig", "OptimizerConfig", "RuntimeConfig", "Scenario", "TrainConfig", "ZOConfig",
    "load_scenario", "read_yaml", "scenario_from_dict", "train_config_from_dict", "validate",
]
