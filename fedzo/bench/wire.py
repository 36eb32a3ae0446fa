"""A counting HTTP/1.1 proxy between SuperNodes and a SuperLink, on loopback only.

Flower 1.41's SuperNodes talk to the SuperLink's fleet API over HTTP/1.1: one POST per
call (``/v1/fleet/pull-messages``, ``push-object``, ``send-node-heartbeat``, ...), each
with a protobuf body. :class:`WireProxy` listens on ``127.0.0.1``, forwards every byte to
the SuperLink on ``127.0.0.1`` (never anywhere else; plain HTTP, so not with TLS) and
parses both directions (``Content-Length``, chunked, or until close).

Counted per TCP connection (reported by the node id its calls carry), request path and
direction (``up``: node -> SuperLink, the requests; ``down``: the responses): calls,
``head`` bytes (request/status line, headers, chunk framing) and ``body`` bytes. A body
is *message* bytes when its call moves an application message (2xx only):
``push-messages``, ``push-object``, a ``pull-messages`` whose response carries a message,
a ``pull-object`` whose response carries the object. Everything else is *overhead*: all
heads, empty polls, objects polled before they were available, heartbeats, registration,
(de)activation, ``get-run``, ``get-fab``, ``confirm-message-received``, failed calls.
:attr:`fedzo.federation.wire.bytes.MessageSize.wire` models the message bytes from a message;
``capture=True`` keeps the bodies of the message calls (:attr:`WireProxy.exchanges`).
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Self

from flwr.proto import fab_pb2, fleet_pb2, heartbeat_pb2, message_pb2, run_pb2
from google.protobuf.message import DecodeError

LOOPBACK = "127.0.0.1"
PREFIX = "/v1/fleet/"
MESSAGE_PATHS = ("push-messages", "pull-messages", "push-object", "pull-object")
DIRECTIONS = ("up", "down")
_NODE_FIELD: dict[str, Any] = {  # requests whose ``node`` field names the SuperNode
    "pull-messages": fleet_pb2.PullMessagesRequest, "push-messages": fleet_pb2.PushMessagesRequest,
    "pull-object": message_pb2.PullObjectRequest, "push-object": message_pb2.PushObjectRequest,
    "send-node-heartbeat": heartbeat_pb2.SendNodeHeartbeatRequest, "get-run": run_pb2.GetRunRequest,
    "confirm-message-received": message_pb2.ConfirmMessageReceivedRequest, "get-fab": fab_pb2.GetFabRequest,
}


@dataclass
class HttpMessage:
    """One parsed HTTP/1.1 request or response."""

    start: str  # the request line or status line
    headers: dict[str, str]  # lower-case names
    head: int = 0  # bytes of start line, headers and chunk framing
    body: bytearray = field(default_factory=bytearray)

    @property
    def path(self) -> str:
        """The request path, short for fleet calls (``pull-messages``)."""
        parts = self.start.split(" ")
        target = parts[1].split("?")[0] if len(parts) > 1 else "?"
        return target.removeprefix(PREFIX)

    @property
    def status(self) -> int:
        """The response status code (0 if this is not a response)."""
        parts = self.start.split(" ")
        return int(parts[1]) if len(parts) > 1 and parts[0].startswith("HTTP/") and parts[1].isdigit() else 0


class HttpParser:
    """Incremental HTTP/1.1 parser for one direction of one connection."""

    def __init__(self, requests: bool) -> None:
        self.requests = requests
        self.buf = bytearray()
        self.cur: HttpMessage | None = None
        self.state = "head"
        self.remaining = 0
        self.done: list[HttpMessage] = []

    def feed(self, data: bytes) -> list[HttpMessage]:
        """Consume ``data``; return the messages it completed."""
        self.buf += data
        while self._step():
            pass
        out, self.done = self.done, []
        return out

    def eof(self) -> list[HttpMessage]:
        """The connection closed: a body delimited by the close ends here."""
        if self.cur is not None and self.state == "close":
            self._finish()
        out, self.done = self.done, []
        return out

    def _finish(self) -> None:
        assert self.cur is not None
        self.done.append(self.cur)
        self.cur, self.state = None, "head"

    def _take(self) -> bool:
        """Move up to ``remaining`` body bytes from the buffer; True on progress."""
        assert self.cur is not None
        n = len(self.buf) if self.state == "close" else min(self.remaining, len(self.buf))
        self.cur.body += self.buf[:n]
        del self.buf[:n]
        self.remaining -= n
        return n > 0

    def _line(self) -> bytes | None:
        """The next CRLF-terminated line (counted as framing), or None if incomplete."""
        idx = self.buf.find(b"\r\n")
        if idx < 0:
            return None
        line = bytes(self.buf[:idx])
        del self.buf[: idx + 2]
        assert self.cur is not None
        self.cur.head += idx + 2
        return line

    def _step(self) -> bool:
        """Advance the state machine; False when more data is needed."""
        if self.state == "head":
            return self._head()
        if self.state in ("length", "chunk-data", "close"):
            progressed = self._take()
            if self.remaining == 0 and self.state != "close":
                if self.state == "length":
                    self._finish()
                else:
                    self.state = "chunk-end"
                return True
            return progressed
        line = self._line()
        if line is None:
            return False
        if self.state == "chunk-size":
            self.remaining = int(line.split(b";")[0].strip() or b"0", 16)
            self.state = "chunk-data" if self.remaining else "trailer"
        elif self.state == "chunk-end":
            self.state = "chunk-size"
        elif self.state == "trailer" and not line:
            self._finish()
        return True

    def _head(self) -> bool:
        idx = self.buf.find(b"\r\n\r\n")
        if idx < 0:
            return False
        lines = bytes(self.buf[:idx]).decode("latin-1").split("\r\n")
        del self.buf[: idx + 4]
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        self.cur = HttpMessage(lines[0], headers, head=idx + 4)
        status = self.cur.status
        if not self.requests and (100 <= status < 200 or status in (204, 304)):
            self._finish()
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            self.state = "chunk-size"
        elif "content-length" in headers:
            self.remaining = int(headers["content-length"])
            self.state = "length"
            if self.remaining == 0:
                self._finish()
        elif self.requests:
            self._finish()
        else:
            self.state = "close"
        return True


@dataclass
class Counts:
    """Bytes of one (connection, path, direction)."""

    calls: int = 0
    head: int = 0
    body: int = 0
    message: int = 0  # of ``body``: message bytes

    @property
    def overhead(self) -> int:
        """Everything that is not message bytes."""
        return self.head + self.body - self.message


@dataclass
class Exchange:
    """A captured call of a message's transfer (``capture=True``)."""

    conn: int
    path: str
    request: bytes
    response: bytes


def is_message_call(path: str, status: int, response: bytes) -> bool:
    """Whether a call belongs to an application message's transfer (see the module docstring)."""
    if path not in MESSAGE_PATHS or not 200 <= status < 300:
        return False
    try:
        if path == "pull-messages":
            return len(fleet_pb2.PullMessagesResponse.FromString(response).messages_list) > 0
        if path == "pull-object":
            got = message_pb2.PullObjectResponse.FromString(response)
            return got.object_found and got.object_available
    except DecodeError:
        return False
    return True


def node_of(path: str, request: bytes, response: bytes) -> int | None:
    """The SuperNode id a call names, if any."""
    try:
        if path in ("activate-node", "register-node"):
            return fleet_pb2.ActivateNodeResponse.FromString(response).node_id or None  # both: node_id = 1
        if path == "deactivate-node":
            return fleet_pb2.DeactivateNodeRequest.FromString(request).node_id or None
        if path in _NODE_FIELD:
            return int(_NODE_FIELD[path].FromString(request).node.node_id) or None
    except DecodeError:
        return None
    return None


@dataclass
class _Conn:
    """One proxied connection: its pending requests, the node it belongs to, raw bytes."""

    ident: int
    pending: deque[HttpMessage] = field(default_factory=deque)
    node: int | None = None
    raw: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DIRECTIONS, 0))


class WireProxy:
    """Counting proxy: ``with WireProxy(superlink_port) as proxy:`` nodes dial
    ``127.0.0.1:proxy.port``; :meth:`report` sums what crossed. Stops on exit."""

    def __init__(self, upstream_port: int, *, port: int = 0, upstream_host: str = LOOPBACK,
                 capture: bool = False) -> None:
        if upstream_host != LOOPBACK:
            raise ValueError(f"the wire proxy forwards to {LOOPBACK} only, not {upstream_host!r}")
        self.upstream_port = int(upstream_port)
        self.port = int(port)
        self.capture = capture
        self.exchanges: list[Exchange] = []
        self._counts: dict[tuple[int, str, str], Counts] = {}
        self._conns: dict[int, _Conn] = {}
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> Self:
        """Listen on 127.0.0.1 (``port``, 0 for a free one) in a background thread."""
        ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(ready,), name="fedzo-wire-proxy", daemon=True)
        self._thread.start()
        if not ready.wait(10) or self._error is not None:
            self.stop()
            raise RuntimeError(f"wire proxy did not start: {self._error!r}")
        return self

    def stop(self) -> None:
        """Close the listener and every connection; wait for the thread."""
        loop, thread = self._loop, self._thread
        if loop is not None and loop.is_running():
            loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(10)
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _serve(self, ready: threading.Event) -> None:
        loop = self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            server = loop.run_until_complete(asyncio.start_server(self._handle, LOOPBACK, self.port))
            self.port = server.sockets[0].getsockname()[1]
        except OSError as exc:
            self._error = exc
            ready.set()
            loop.close()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            server.close()
            tasks = asyncio.all_tasks(loop)
            for task in tasks:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.close()

    # -- forwarding --------------------------------------------------------------------------
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with self._lock:
            conn = _Conn(len(self._conns))
            self._conns[conn.ident] = conn
        try:
            up_reader, up_writer = await asyncio.open_connection(LOOPBACK, self.upstream_port)
        except OSError:
            writer.close()
            return
        pumps = [asyncio.ensure_future(self._pump(reader, up_writer, conn, "up")),
                 asyncio.ensure_future(self._pump(up_reader, writer, conn, "down"))]
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in pumps:
                pump.cancel()
            for w in (writer, up_writer):
                w.close()
            with self._lock:  # requests that got no answer
                while conn.pending:
                    request = conn.pending.popleft()
                    self._count(conn.ident, request.path, "up", request, False)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, conn: _Conn,
                    direction: str) -> None:
        parser = HttpParser(requests=direction == "up")
        try:
            while data := await reader.read(1 << 16):
                self._parsed(conn, direction, len(data), parser.feed(data))  # before the peer can answer
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        self._parsed(conn, direction, 0, parser.eof())

    def _parsed(self, conn: _Conn, direction: str, raw: int, messages: list[HttpMessage]) -> None:
        with self._lock:
            conn.raw[direction] += raw
            for msg in messages:
                if direction == "up":
                    conn.pending.append(msg)
                elif 100 <= msg.status < 200:  # interim response: the request is still open
                    self._count(conn.ident, conn.pending[0].path if conn.pending else "?", "down", msg, False)
                else:
                    self._call(conn, conn.pending.popleft() if conn.pending else None, msg)

    def _call(self, conn: _Conn, request: HttpMessage | None, response: HttpMessage) -> None:
        """Account one complete call (its request and response)."""
        path = request.path if request is not None else "?"
        req_body = bytes(request.body) if request is not None else b""
        message = is_message_call(path, response.status, bytes(response.body))
        if conn.node is None:
            conn.node = node_of(path, req_body, bytes(response.body))
        if request is not None:
            self._count(conn.ident, path, "up", request, message)
        self._count(conn.ident, path, "down", response, message)
        if message and self.capture:
            self.exchanges.append(Exchange(conn.ident, path, req_body, bytes(response.body)))

    def _count(self, conn: int, path: str, direction: str, msg: HttpMessage, message: bool) -> None:
        c = self._counts.setdefault((conn, path, direction), Counts())
        c.calls += 1
        c.head += msg.head
        c.body += len(msg.body)
        c.message += len(msg.body) if message else 0

    # -- results -----------------------------------------------------------------------------
    def counts(self) -> dict[tuple[str, str, str], Counts]:
        """(node, path, direction) -> Counts; node is the id its calls carry, else ``conn-N``."""
        out: dict[tuple[str, str, str], Counts] = {}
        with self._lock:
            for (ident, path, direction), c in self._counts.items():
                node = self._conns[ident].node
                key = (str(node) if node is not None else f"conn-{ident}", path, direction)
                acc = out.get(key, Counts())
                out[key] = Counts(acc.calls + c.calls, acc.head + c.head, acc.body + c.body, acc.message + c.message)
        return out

    def report(self) -> dict[str, Any]:
        """Message and overhead bytes by direction, by node and by path; ``raw_bytes``: all
        bytes forwarded (heads + bodies, once every call is complete)."""
        counts = self.counts()
        with self._lock:
            raw = {d: sum(c.raw[d] for c in self._conns.values()) for d in DIRECTIONS}
        nodes: dict[str, dict[str, Any]] = {}
        for (node, path, direction), c in sorted(counts.items()):
            n = nodes.setdefault(node, {"message_bytes": 0, "overhead_bytes": 0, "paths": {}})
            n["message_bytes"] += c.message
            n["overhead_bytes"] += c.overhead
            n["paths"].setdefault(path, {})[direction] = {"calls": c.calls, "head": c.head, "body": c.body,
                                                         "message": c.message}
        by_dir = {d: [c for (_, _, dd), c in counts.items() if dd == d] for d in DIRECTIONS}
        out: dict[str, Any] = {f"{attr}_bytes": {d: sum(getattr(c, attr) for c in cs) for d, cs in by_dir.items()}
                               for attr in ("message", "overhead", "head", "body")}
        return {**out, "raw_bytes": raw, "nodes": nodes}

