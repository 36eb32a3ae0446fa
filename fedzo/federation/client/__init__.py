"""The client side, what a worker process (Ray actor, SuperNode's client-app process, or
this process in the in-process and batched engines) runs: ``worker`` (the
:class:`~fedzo.federation.client.worker.Worker`, ``handle`` and the ClientApp ``app``),
``fedavg`` (the FedAvg baseline's wire schema and local training), ``nodecache`` (a node's
synced model on disk between messages), ``memory`` (the process's measured peak memory)
and ``threads`` (a client's torch threads, capped at what Ray reserved for it)."""
