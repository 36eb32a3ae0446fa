"""How the server reaches its clients: ``base`` (the :class:`Transport` protocol, the Grid
transport that Flower's simulation and deployment engines use, and the handshake that starts
every run), ``inprocess`` (the loopback engine: the same client code called directly),
``batched`` (subpackage: in-process, the round's ZO clients share joint forward passes)
and ``faults`` (fault injection at the transport boundary)."""
