"""The batched engine: a round's ZO clients share joint forward passes on one device.

Each participant runs its own, unchanged local-step code in a turn-taking thread; every
time all of them wait for a loss, joint forward passes over all their rows answer them.
Modules: ``engine`` (:class:`BatchedTransport`, the Transport the run uses, and how a round
chooses its mode), ``lockstep`` (the turn-taking threads), ``joint`` (packing the clients'
rows into passes and each client's loss from its own rows), ``rowstate`` (per-row client
state: each block of rows gets its own client's prompt, prefix or LoRA adapters),
``fullrows`` (per-row full weights: each trained layer runs each block with its client's
tensors), ``stacked`` (full weights or LoRA adapters kept stacked per group: whole clients
per pass, one batched call per trained layer), ``plan`` (how many clients' states fit the device at once: the round's groups),
``promptcache`` (prompt tuning's virtual tokens run once per client and pass, their keys
and values shared by its rows).
"""

from fedzo.federation.transports.batched.engine import BatchedTransport, NotShareable, RecordingPerturber

__all__ = ["BatchedTransport", "NotShareable", "RecordingPerturber"]
