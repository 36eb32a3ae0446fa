"""Federated MeZO over Flower: the round engine, its protocols, catch-up, bytes, engines.

Split by runtime role, as Flower splits its server app, client app and simulation:
``client`` (subpackage: what a worker process runs: the worker and the ClientApp, FedAvg's
local training, the node's disk cache, its measured memory and torch threads), ``wire``
(subpackage: the seeds-and-scalars wire schema and the byte counting of messages),
``batched`` (subpackage: the batched engine, turn-taking clients sharing joint forward
passes); the rest is the server's and the run's: ``engine`` (the round loop every
protocol runs on), ``protocols`` (seeds-and-scalars and FedAvg plug-ins), ``catchup``
(policies, bounded history), ``aggregate`` and ``robust`` (per-seed aggregation),
``replies`` (collecting and checking replies), ``faults`` (fault injection), ``fleet``
(devices, memory verdicts and the clock), ``transport`` (how the server reaches nodes;
the handshake), ``inprocess`` (the loopback engine), ``run`` (``run_federated``),
``deploy`` (the deployment engine's ServerApp), ``global_model`` (rebuild a run's model).
"""
