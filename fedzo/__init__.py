"""fedzo: federated zeroth-order fine-tuning simulator.

The pure optimisation core lives in :mod:`fedzo.zo` (torch only). Models, tasks,
devices and the Flower federation are adapters around it.
"""

__version__ = "0.1.0"
