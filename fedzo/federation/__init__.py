"""Federated MeZO over Flower: the round engine, its protocols, catch-up, bytes, engines.

Split by runtime role, as Flower splits its server app, client app and simulation:
``server`` (subpackage: the round loop, the protocols it drives, sampling, replies,
aggregation, reputation, accounting, a run's global model), ``client`` (subpackage: what a
worker process runs: the worker and the ClientApp, FedAvg's local training, the node's disk
cache, its measured memory and torch threads), ``transports`` (subpackage: how the server
reaches its clients: Flower's Grid and the handshake, in-process, batched, fault injection),
``wire`` (subpackage: both protocols' wire schemas and the byte counting of messages),
``catchup`` (policies, bounded history); at the top level, what both sides or the run use:
``parts`` (a scenario built into the run's parts, once per party),
``batches`` (each local step's examples), ``setup`` (the handshake's run configuration),
``logserver`` (the update log served to remote simulation workers), ``fleet`` (devices,
memory verdicts and the clock), ``preflight``, ``progress``, ``run`` (``run_federated``),
``deploy`` (the deployment engine's ServerApp) and ``watchdog``.
"""
