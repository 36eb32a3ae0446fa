"""Federated MeZO over Flower: the round engine, its protocols, catch-up, bytes, engines.

Modules, one concept each: ``engine`` (the round loop every protocol runs on),
``protocols`` (seeds-and-scalars and FedAvg plug-ins), ``messages`` (wire schema of the
seeds-and-scalars protocol), ``fedavg_client`` (FedAvg wire schema and local training),
``client`` (the worker and the ClientApp), ``catchup`` (policies, bounded history),
``aggregate`` and ``robust`` (per-seed aggregation), ``replies`` (collecting and
checking replies), ``faults`` (fault injection), ``fleet`` (devices, memory verdicts and
the clock), ``bytes`` (serialized sizes), ``transport`` (how the server reaches nodes;
the handshake), ``inprocess`` (the loopback engine), ``batched`` (subpackage: the batched
engine, turn-taking clients sharing joint forward passes), ``run`` (``run_federated``),
``deploy`` (the deployment engine's ServerApp), ``global_model`` (rebuild a run's model).
"""
