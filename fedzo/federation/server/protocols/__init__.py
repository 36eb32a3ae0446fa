"""Federated protocols, as plug-ins of the round engine (:mod:`fedzo.federation.server.engine`):
``zo`` (seeds and scalars) and ``fedavg`` (FedAvg with backprop). The optimizer family
picks one (:func:`fedzo.federation.run.build_protocol`)."""
