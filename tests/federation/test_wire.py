"""fedzo's byte count against the bytes that cross the network.

The deployment test reads the loopback deployment it shares with
test_deploy_integration.py (conftest.py's ``proxied_deployment``: the tiny scenario, its 2
SuperNodes dialling a counting proxy, :mod:`fedzo.bench.wire`, in front of the SuperLink)
and compares the proxy's *message* bytes (the protobuf bodies of the calls that move
application messages) with fedzo's ``wire`` figures for the same run, handshake
included. Every figure the run directory records (client records' ``bytes_down`` /
``bytes_up``, ``summary.json``'s ``bytes_by_kind["setup"]``) must equal the ``wire`` or
the ``message`` figure of :meth:`MessageSize.of` for the very message the proxy saw,
byte for byte. When they are ``wire`` figures, fedzo's count is the summary's
``bytes_up + bytes_down``; while the engine still records ``message`` figures, it is
rebuilt from the proxy's messages with :meth:`MessageSize.of`.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from flwr.app import Message
from flwr.proto import fleet_pb2, message_pb2
from flwr.supercore.inflatable.inflatable_utils import inflate_object_from_contents

from fedzo.bench.wire import Exchange, HttpParser, WireProxy, is_message_call
from fedzo.federation.wire.bytes import MessageSize, wire_parts

ROUNDS = 3  # DEPLOY_SCENARIO's (tests/federation/conftest.py)
TOLERANCE = 0.05


# -- the proxy's parser, without a network ---------------------------------------------------
def test_parser_splits_heads_bodies_and_chunk_framing() -> None:
    req = b"POST /v1/fleet/pull-object HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=1\r\nde\r\n0\r\n\r\n"
    p = HttpParser(requests=True)
    got = [m for i in range(len(req + req)) for m in p.feed((req + req)[i:i + 1])]  # byte by byte
    assert [(m.path, bytes(m.body), m.head) for m in got] == [("pull-object", b"hello", len(req) - 5)] * 2
    r = HttpParser(requests=False).feed(chunked)
    assert len(r) == 1 and r[0].status == 200 and bytes(r[0].body) == b"abcde"
    assert r[0].head + len(r[0].body) == len(chunked)
    close = HttpParser(requests=False)
    assert close.feed(b"HTTP/1.1 200 OK\r\n\r\nuntil close") == []
    assert bytes(close.eof()[0].body) == b"until close"


def test_empty_polls_and_unavailable_objects_are_overhead() -> None:
    empty = fleet_pb2.PullMessagesResponse().SerializeToString()
    waiting = message_pb2.PullObjectResponse(object_found=True, object_available=False).SerializeToString()
    found = message_pb2.PullObjectResponse(object_found=True, object_available=True, object_content=b"x")
    assert not is_message_call("pull-messages", 200, empty)
    assert not is_message_call("pull-object", 200, waiting)
    assert is_message_call("pull-object", 200, found.SerializeToString())
    assert not is_message_call("push-object", 500, b"")
    assert not is_message_call("send-node-heartbeat", 200, b"")


def test_proxy_refuses_other_hosts() -> None:
    with pytest.raises(ValueError):
        WireProxy(8000, upstream_host="10.0.0.1")


class _Link(BaseHTTPRequestHandler):
    """A stand-in SuperLink: answers every POST with a protobuf-sized body, chunked for heartbeats."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        body = message_pb2.PushObjectResponse(stored=True).SerializeToString()
        self.send_response(200)
        if self.path.endswith("send-node-heartbeat"):
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
        else:
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_proxy_forwards_and_counts_on_loopback() -> None:
    link = ThreadingHTTPServer(("127.0.0.1", 0), _Link)
    threading.Thread(target=link.serve_forever, daemon=True).start()
    node = message_pb2.PushObjectRequest(object_id="a" * 64, object_content=b"x" * 1000)
    node.node.node_id = 42
    try:
        with WireProxy(link.server_address[1]) as proxy:
            conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
            for path in ("push-object", "send-node-heartbeat", "push-object"):
                conn.request("POST", f"/v1/fleet/{path}", body=node.SerializeToString())
                assert conn.getresponse().read() == b"\x08\x01"
            conn.close()
            time.sleep(0.2)
            report = proxy.report()
        thread = proxy._thread
    finally:
        link.shutdown()
    assert thread is None
    paths = report["nodes"]["42"]["paths"]
    assert paths["push-object"]["up"]["calls"] == 2 and paths["send-node-heartbeat"]["down"]["body"] == 2
    assert report["message_bytes"] == {"up": 2 * node.ByteSize(), "down": 4}
    assert report["raw_bytes"] == {d: report["head_bytes"][d] + report["body_bytes"][d] for d in ("up", "down")}
    assert report["overhead_bytes"]["up"] == report["head_bytes"]["up"] + node.ByteSize()


# -- the deployment ---------------------------------------------------------------------------
def reassemble(exchanges: list[Exchange]) -> list[tuple[str, Message]]:
    """The application messages of captured calls as Flower inflates them: ("down", msg)
    per pulled message, ("up", msg) per pushed one."""
    objects: dict[str, bytes] = {}
    heads: list[tuple[str, Any, Any]] = []
    for ex in exchanges:
        if ex.path == "pull-messages":
            got = fleet_pb2.PullMessagesResponse.FromString(ex.response)
            heads += [("down", m, t) for m, t in zip(got.messages_list, got.message_object_trees, strict=True)]
        elif ex.path == "push-messages":
            sent = fleet_pb2.PushMessagesRequest.FromString(ex.request)
            heads += [("up", m, t) for m, t in zip(sent.messages_list, sent.message_object_trees, strict=True)]
        elif ex.path == "pull-object":
            oid = message_pb2.PullObjectRequest.FromString(ex.request).object_id
            objects[oid] = message_pb2.PullObjectResponse.FromString(ex.response).object_content
        elif ex.path == "push-object":
            pushed = message_pb2.PushObjectRequest.FromString(ex.request)
            objects[pushed.object_id] = pushed.object_content
    out = []
    for direction, proto, tree in heads:
        msg = inflate_object_from_contents(tree.object_id, objects, keep_object_contents=True)
        assert isinstance(msg, Message)
        msg.metadata.__dict__["_message_id"] = proto.metadata.message_id  # as Flower's receivers do
        out.append((direction, msg))
    return out


def key_of(direction: str, msg: Message) -> tuple[Any, int]:
    """(round, client) of a train message; ("setup", node) of a handshake message."""
    rec = msg.content.config_records["fz"]
    if direction == "down":
        return ("setup", msg.metadata.dst_node_id) if rec["op"] == "setup" else (int(rec["r"]), int(rec["c"]))
    return ("setup", msg.metadata.src_node_id) if "r" not in rec else (int(rec["r"]), int(rec["c"]))


def fedzo_count(run: Path, messages: list[tuple[str, Message]]) -> tuple[int, str]:
    """fedzo's wire total for the run (handshake included) and where it comes from.

    Each recorded figure must equal the ``wire`` (or, before the engine records it, the
    ``message``) figure of the message the proxy saw: the run directory then gives the
    total if it records ``wire`` throughout; otherwise the rebuilt ``wire`` figures do."""
    summary = json.loads((run / "summary.json").read_text())
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    clients = {(r["round"], r["client"]): r for r in records if r.get("kind") == "client"}
    assert sum(r["status"] == "ok" for r in clients.values()) == 2 * ROUNDS
    sizes = {(d, key_of(d, m)): MessageSize.of(m) for d, m in messages}
    assert len(sizes) == len(messages) == 4 * ROUNDS + 4, sorted(sizes)  # + 2 setups and 2 setup replies
    bases = {"wire", "message"}  # the figure the run directory records
    for (rnd, c), rec in clients.items():
        down, up = sizes[("down", (rnd, c))], sizes[("up", (rnd, c))]
        assert (rec["payload_bytes_down"], rec["payload_bytes_up"]) == (down.payload, up.payload)
        recorded = (rec["bytes_down"], rec["bytes_up"])
        bases &= {b for b in ("wire", "message") if recorded == (getattr(down, b), getattr(up, b))}
        assert bases, f"round {rnd} client {c}: recorded {recorded}, measured {down}, {up}"
    setup = {b: (sum(getattr(s, b) for (d, k), s in sizes.items() if k[0] == "setup" and d == "up"),
                 sum(getattr(s, b) for (d, k), s in sizes.items() if k[0] == "setup" and d == "down"))
             for b in ("wire", "message")}
    recorded_setup = tuple(summary.get("bytes_by_kind", {}).get("setup", ()))
    if recorded_setup:
        bases &= {b for b, v in setup.items() if v == recorded_setup}
    assert len(bases) == 1, (bases, recorded_setup, setup)
    if bases == {"wire"} and recorded_setup:
        return summary["bytes_up"] + summary["bytes_down"], "run directory (wire)"
    return sum(s.wire for s in sizes.values()), f"rebuilt (the run directory records {bases})"


def overhead_table(report: dict[str, Any], seconds: float) -> list[str]:
    """Per node: overhead bytes in all, per round and per second, and the calls behind them."""
    lines = []
    for node, n in report["nodes"].items():
        lines.append(f"node {node}: message {n['message_bytes']} B, overhead {n['overhead_bytes']} B "
                     f"= {n['overhead_bytes'] / ROUNDS:.0f} B/round, {n['overhead_bytes'] / seconds:.0f} B/s")
        for path, dirs in sorted(n["paths"].items()):
            up, down = dirs.get("up", {}), dirs.get("down", {})
            over = sum(d.get("head", 0) + d.get("body", 0) - d.get("message", 0) for d in (up, down))
            lines.append(f"  {path:26} {up.get('calls', 0):3d} calls, overhead {over:6d} B (headers up "
                         f"{up.get('head', 0)}, down {down.get('head', 0)})")
    return lines


@pytest.mark.deploy
def test_fedzo_counts_the_message_bytes_that_cross_the_network(proxied_deployment: Any) -> None:
    dep = proxied_deployment
    output, seconds, report = dep.output, dep.seconds, dep.report
    assert "deploy_local: SuperNodes dial 127.0.0.1:" in output
    assert report["raw_bytes"] == {d: report["head_bytes"][d] + report["body_bytes"][d] for d in ("up", "down")}
    messages = reassemble(dep.exchanges)
    fedzo, source = fedzo_count(dep.root / "deployed", messages)
    measured = sum(report["message_bytes"].values())
    by_path: dict[tuple[str, str], int] = {}
    for _, m in messages:
        for part, n in wire_parts(m).items():
            by_path[part] = by_path.get(part, 0) + n
    proxy_by_path: dict[tuple[str, str], int] = {}
    for n in report["nodes"].values():
        for p, dirs in n["paths"].items():
            for d, v in dirs.items():
                if v["message"]:
                    proxy_by_path[(p, d)] = proxy_by_path.get((p, d), 0) + v["message"]
    diff = (fedzo - measured) / measured
    print(f"\ndeployment through the proxy: {seconds:.1f} s; proxy message bytes {measured} "
          f"({report['message_bytes']}), fedzo {fedzo} ({source}), difference {100 * diff:+.2f} %")
    print("\n".join(overhead_table(report, seconds)))
    (dep.root / "wire_report.json").write_text(json.dumps(report, indent=1))
    print(f"by (path, direction): fedzo {sorted(by_path.items())}\n  proxy {sorted(proxy_by_path.items())}")
    assert sum(n["message_bytes"] > 0 and n["overhead_bytes"] > 0 for n in report["nodes"].values()) == 2
    assert abs(diff) <= TOLERANCE, (by_path, proxy_by_path)
