"""A secured deployment for real: ``scripts/deploy_local.sh --secure`` on loopback.

The SuperLink serves TLS with a throw-away CA and runs with SuperNode authentication;
the two SuperNodes the script starts have registered keys and train a short run of the
tiny model. While that run is going, three intruders dial the same SuperLink:

- a SuperNode with TLS and its own key, never registered: the SuperLink refuses to
  activate it;
- a SuperNode with TLS and no key (which, without ``--enable-supernode-auth``, registers
  itself with a throw-away key and joins): the SuperLink refuses to register it;
- a SuperNode with ``--insecure`` (plain HTTP): no API call gets through at all;
- a SuperNode that trusts another CA: its TLS handshake fails (unknown issuer);
- a SuperNode that dials the SuperLink by a name its certificate does not carry
  (``localhost``; the certificate names only ``127.0.0.1``): the handshake fails on the name.

All must exit non-zero within a bounded wait with the matching error in their logs, and
``flwr supernode list`` must show only the registered nodes. The secured run must end
with the model hash of the same scenario run in-process (which the insecure deployment
test also matches). Certificates and keys are
generated here with ``cryptography`` (a dependency of flwr); nothing secret is committed.
About 80 s on 2 CPU cores. Marked ``deploy``: part of the default run (CI included); ``-m "not deploy"`` leaves it out.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from processes import pid_alive

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "deploy_local.sh"

SCENARIO = """\
version: 2
name: deploy-secure-tiny
model: {name: tiny-llama}
data: {task: synthetic-sentiment, train_examples: 32, eval_examples: 16, batch_size: 8}
optimizer: {lr: 0.001}
runtime: {device: cpu, threads: 1}
federation:
  num_clients: 2
  rounds: 2
  local_steps: 2
  round_timeout: 300
fleet:
  default_profile: rpi5-8gb  # always available: every client-round must come back
"""

INTRUDER_WAIT = 60  # seconds an intruder may take to give up


def _certificate(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name,
                 issuer_key: ec.EllipticCurvePrivateKey,
                 extensions: list[tuple[x509.ExtensionType, bool]]) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
               .issuer_name(issuer).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1)))
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(issuer_key, hashes.SHA256())


def _write_tls_files(directory: Path, hosts: list[str]) -> None:
    """ca.crt, server.crt (SAN: hosts) and server.key; the CA's key is never written."""
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fedzo test CA")])
    usage = dict.fromkeys(("content_commitment", "key_encipherment", "data_encipherment", "key_agreement", "encipher_only", "decipher_only"), False)
    ca = _certificate("fedzo test CA", ca_key, ca_name, ca_key, [
        (x509.BasicConstraints(ca=True, path_length=0), True),
        (x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, **usage), True),
        (x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False),
    ])
    sans: list[x509.GeneralName] = []
    for host in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    server_key = ec.generate_private_key(ec.SECP384R1())
    server = _certificate(hosts[0], server_key, ca_name, ca_key, [
        (x509.SubjectAlternativeName(sans), False),
        (x509.BasicConstraints(ca=False, path_length=None), True),
        (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False),
        (x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False),
    ])
    (directory / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (directory / "server.crt").write_bytes(server.public_bytes(serialization.Encoding.PEM))
    key_file = directory / "server.key"
    key_file.write_bytes(server_key.private_bytes(serialization.Encoding.PEM,
                                                  serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()))
    key_file.chmod(0o600)


def _write_node_key(private: Path) -> None:
    """An EC P-384 key pair in OpenSSH format (what ``ssh-keygen -t ecdsa -b 384`` writes):
    the private key at ``private``, the public key next to it as ``<name>.pub``."""
    key = ec.generate_private_key(ec.SECP384R1())
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.OpenSSH,
                                          serialization.NoEncryption()))
    private.chmod(0o600)
    private.with_name(private.name + ".pub").write_bytes(
        key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                      serialization.PublicFormat.OpenSSH) + b"\n")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen) -> None:
    """Stop a process started with start_new_session=True and everything in its group
    (a SuperNode's flower-superexec can outlive the SuperNode itself by a minute)."""
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break  # the group is empty
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            proc.poll()  # reap the leader: a zombie still counts as a group member
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.2)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


class _Lines:
    """The script's output, read on a thread so that the test can wait for a line."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.lines: list[str] = []
        self.done = False
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self.done = True
            self._changed.notify_all()

    def wait_for(self, prefix: str, timeout: float) -> str | None:
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = [x for x in self.lines if x.startswith(prefix)]
                if found:
                    return found[0]
                if self.done:
                    return None
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._changed.wait(left)

    def text(self) -> str:
        self._thread.join(timeout=10)
        return "\n".join(self.lines)


def _listed_nodes(env: dict[str, str]) -> dict[str, str]:
    """node id -> status, as the SuperLink's Control API lists them (over TLS)."""
    out = subprocess.run(["flwr", "supernode", "list", "fedzo-deploy", "--format", "json"],
                         capture_output=True, text=True, env=env, timeout=60, check=False)
    assert out.returncode == 0, f"flwr supernode list failed:\n{out.stdout}\n{out.stderr}"
    return {str(n["node-id"]): n["status"] for n in json.loads(out.stdout)["nodes"]}


@pytest.mark.deploy
def test_tls_and_supernode_auth_admit_registered_nodes_only(tmp_path) -> None:
    secure = tmp_path / "secure"        # what the server holds: TLS files and allowed keys
    secure.mkdir()
    _write_tls_files(secure, ["127.0.0.1"])  # not localhost: the wrong-name intruder dials that
    other_ca = tmp_path / "other-ca"    # a CA the SuperLink's certificate does not come from
    other_ca.mkdir()
    _write_tls_files(other_ca, ["127.0.0.1", "localhost"])
    for i in range(2):
        _write_node_key(secure / f"node-{i}")
    outsider = tmp_path / "outsider"    # a key pair the SuperLink was never told about
    outsider.mkdir()
    _write_node_key(outsider / "rogue")

    scenario = tmp_path / "deploy-secure-tiny.yaml"
    scenario.write_text(SCENARIO)
    logs = tmp_path / "logs"
    port = _free_port()
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**os.environ, "PATH": path, "FLWR_TELEMETRY_ENABLED": "0",
           "FLWR_DISABLE_UPDATE_CHECK": "1"}
    cli_env = {**env, "FLWR_HOME": str(logs / "flwr-home")}  # the script's CLI connection
    intruder_env = {**env, "FLWR_HOME": str(tmp_path / "intruder-home")}

    t0 = time.monotonic()
    script = subprocess.Popen(["bash", str(SCRIPT), str(scenario), "--secure", str(secure),
                               "--port", str(port), "--out", str(tmp_path / "deployed"),
                               "--logs", str(logs), "--timeout", "300"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                              start_new_session=True)
    lines = _Lines(script)
    intruders: dict[str, subprocess.Popen] = {}
    try:
        assert lines.wait_for("deploy_local: starting 2 SuperNode(s)", 120), lines.text()
        registered = {m.group(1): m.group(2) for x in lines.lines
                      if (m := re.match(r"deploy_local: registered (\S+) as node (\d+)$", x))}
        assert set(registered) == {"node-0.pub", "node-1.pub"}, lines.text()

        # The intruders dial the SuperLink while the registered nodes join and train.
        superlink = f"127.0.0.1:{port}"
        commands = {
            "unregistered": ["--root-certificates", str(secure / "ca.crt"),
                             "--auth-supernode-private-key", str(outsider / "rogue")],
            "keyless": ["--root-certificates", str(secure / "ca.crt")],
            "insecure": ["--insecure"],
            "wrong-ca": ["--root-certificates", str(other_ca / "ca.crt"),
                         "--auth-supernode-private-key", str(outsider / "rogue")],
            "wrong-name": ["--root-certificates", str(secure / "ca.crt"),
                           "--auth-supernode-private-key", str(outsider / "rogue")],
        }
        for name, security in commands.items():
            log = (tmp_path / f"{name}.log").open("w")
            dial = f"localhost:{port}" if name == "wrong-name" else superlink
            intruders[name] = subprocess.Popen(
                ["flower-supernode", *security, "--superlink", dial,
                 "--port", str(_free_port()), "--max-retries", "3", "--max-wait-time", "30"],
                stdout=log, stderr=subprocess.STDOUT, env=intruder_env, start_new_session=True)
            log.close()

        # (a) the registered nodes come online: listed with TLS by the Control API
        deadline = time.monotonic() + 90
        while True:
            listed = _listed_nodes(cli_env)
            if all(listed.get(node_id) == "online" for node_id in registered.values()):
                break
            assert time.monotonic() < deadline, f"registered nodes not online: {listed}"
            assert script.poll() is None, lines.text()
            time.sleep(2)

        # (b), (c) every intruder gives up within a bounded wait, for the right reason
        for name, proc in intruders.items():
            try:
                proc.wait(timeout=INTRUDER_WAIT)
            except subprocess.TimeoutExpired:
                pytest.fail(f"the {name} SuperNode was still running after {INTRUDER_WAIT} s:\n"
                            + (tmp_path / f"{name}.log").read_text())
        unregistered_log = (tmp_path / "unregistered.log").read_text()
        assert intruders["unregistered"].returncode != 0, unregistered_log
        assert "Failed to activate SuperNode" in unregistered_log, unregistered_log
        superlink_log = (logs / "superlink.log").read_text()
        assert "No SuperNode found with the given public key" in superlink_log
        keyless_log = (tmp_path / "keyless.log").read_text()
        assert intruders["keyless"].returncode != 0, keyless_log
        assert "SuperNode authentication is enabled" in keyless_log, keyless_log
        assert "[/v1/fleet/register-node][ApiError:2001]" in superlink_log
        insecure_log = (tmp_path / "insecure.log").read_text()
        assert intruders["insecure"].returncode != 0, insecure_log
        assert "Giving up reconnection" in insecure_log, insecure_log
        assert "[code:" not in insecure_log, insecure_log  # no API answer ever reached it
        for name, reason in (("wrong-ca", "unable to get local issuer certificate"),
                             ("wrong-name", "Hostname mismatch, certificate is not valid for 'localhost'")):
            log_text = (tmp_path / f"{name}.log").read_text()
            assert intruders[name].returncode != 0, log_text
            assert "CERTIFICATE_VERIFY_FAILED" in log_text and reason in log_text, log_text
            assert "[code:" not in log_text, log_text

        # ... and the SuperLink, still up, lists exactly the registered nodes
        assert script.poll() is None, "the run ended before the intruders were checked"
        assert set(_listed_nodes(cli_env)) == set(registered.values())

        try:
            output_rc = script.wait(timeout=300)
        except subprocess.TimeoutExpired:
            pytest.fail(f"deploy_local.sh timed out:\n{lines.text()}")
    finally:
        for proc in intruders.values():
            _stop(proc)
        if script.poll() is None:
            script.send_signal(signal.SIGTERM)  # the script's trap stops what it started
            try:
                script.wait(timeout=30)
            except subprocess.TimeoutExpired:
                _stop(script)
    seconds = time.monotonic() - t0
    output = lines.text()
    assert output_rc == 0, output

    pids = [int(p) for line in output.splitlines() if line.startswith("deploy_local: pids ")
            for p in line.split()[2:]]
    assert len(pids) == 3, output  # superlink + 2 supernodes, all stopped by the script
    assert not any(pid_alive(p) for p in pids)
    assert "TLS and SuperNode authentication" in output
    assert "Uvicorn running on https://" in (logs / "superlink.log").read_text()
    summary = json.loads((tmp_path / "deployed" / "summary.json").read_text())
    assert summary["name"] == "deploy-secure-tiny"
    from fedzo.config.scenario import load_scenario
    from fedzo.federation.run import run_federated

    reference = run_federated(load_scenario(scenario), tmp_path / "inprocess", engine="inprocess")
    assert summary["model_sha256"] == reference.model_sha256  # TLS and authentication change nothing else
    metrics = (tmp_path / "deployed" / "metrics.jsonl").read_text()
    records = [json.loads(x) for x in metrics.splitlines()]
    assert sum(r.get("status") == "ok" for r in records) == 4  # 2 nodes x 2 rounds
    print(f"secure deployment run: {seconds:.1f} s")
