"""What travels between server and clients: ``messages`` (the wire schema of the
seeds-and-scalars protocol on Flower's typed records) and ``bytes`` (each message's size as
Flower serializes and transports it: payload, message and wire)."""
