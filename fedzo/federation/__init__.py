"""Federated MeZO over Flower: seeds-and-scalars protocol, catch-up, byte accounting, engines.

Modules, one concept each: ``config`` (FederationConfig), ``messages`` (wire schema),
``aggregate`` (per-seed aggregation, reply validation), ``catchup`` (policies, bounded
history), ``bytes`` (serialized sizes), ``clock`` (simulated time, stand-in), ``client``
(worker + ClientApp), ``server`` (rounds over a Transport), ``inprocess`` (loopback
engine), ``run`` (``run_federated``).
"""
