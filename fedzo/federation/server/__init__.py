"""The server's side of a federated run: ``engine`` (the round loop every protocol runs on:
sampling, sending, collecting, committing, recording), ``protocols`` (the seeds-and-scalars
and FedAvg plug-ins the loop drives), ``sampling`` (who takes part in a round), ``replies``
(collecting a round's replies and checking each against what its client was sent),
``aggregate``, ``robust``, ``reputation`` and ``reference`` (per-seed aggregation, clipping,
per-client reputation and the server's own reference scalars), ``accounting`` (the one
place that sums time, bytes and memory and builds the records) and ``global_model`` (a
finished run's global model rebuilt from its directory)."""
