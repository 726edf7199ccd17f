"""HTTPS upstreams (SPEC §5): certificates are verified — against the system's roots by
default, or against `ca_file` for a private CA — and a certificate the gateway cannot
verify fails the call closed with a JSON-RPC error naming the server."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from e2e_helpers import Procs, RawSession, start_gateway_config, start_header_recorder

TOKEN = "tg-e2e-tls-grant-token"
ALLOW_ALL = {"version": "1", "default": "allow"}


def private_ca(directory: Path) -> tuple[Path, Path, Path]:
    """A CA nobody trusts, and a certificate it issued for 127.0.0.1: only ca_file can vouch
    for it. Returns (CA certificate, server certificate, server key)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("openssl is needed to make test certificates (apt-get install openssl)")

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, capture_output=True, timeout=60)

    ca_key, ca_cert = directory / "ca-key.pem", directory / "ca.pem"
    key, csr, cert = directory / "key.pem", directory / "server.csr", directory / "cert.pem"
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-keyout", str(ca_key),
        "-out", str(ca_cert), "-subj", "/CN=toolgate test CA")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", "/CN=127.0.0.1")
    extensions = directory / "server.ext"
    extensions.write_text("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n")
    run("x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey", str(ca_key), "-CAcreateserial",
        "-days", "2", "-out", str(cert), "-extfile", str(extensions))
    return ca_cert, cert, key


def test_https_upstream_is_verified_against_ca_file(procs: Procs, tmp_path: Path) -> None:
    ca_cert, cert, key = private_ca(tmp_path)
    upstream = start_header_recorder(procs, tmp_path / "headers.jsonl",
                                     "--tls-cert", str(cert), "--tls-key", str(key))
    assert upstream.startswith("https://"), upstream
    config = f"""
[gateway]
data_dir = "data"

[servers.trusted]
url = "{upstream}"
ca_file = "{ca_cert}"

[servers.untrusted]
url = "{upstream}"
timeout = "10s"

[[grants]]
name = "tls"
token = "{TOKEN}"
policies = {{ trusted = "allow.json", untrusted = "allow.json" }}
"""
    gw = start_gateway_config(procs, tmp_path, config, policies={"allow.json": ALLOW_ALL}, name="toolgate-tls")

    trusted = RawSession(gw.server_url("trusted"), TOKEN)
    try:
        trusted.initialize()
        resp, msg = trusted.request("tools/call", {"name": "whoami", "arguments": {}})
        assert resp.status_code == 200 and msg["result"]["isError"] is False, msg
    finally:
        trusted.close()

    # The same server without ca_file: its certificate is not signed by a system root.
    untrusted = RawSession(gw.server_url("untrusted"), TOKEN)
    try:
        msg = {"jsonrpc": "2.0", "id": 0, "method": "initialize",
               "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                          "clientInfo": {"name": "e2e-tls", "version": "0"}}}
        resp = untrusted.post(msg)
        assert resp.status_code == 200, resp.text
        error = resp.json()["error"]
        assert error["code"] == -32603, error
        assert '"untrusted"' in error["message"], error
        assert "certificate" in error["message"].lower(), error
    finally:
        untrusted.close()
