"""OAuth resource-server mode (SPEC §7; issue 5 point 3) with the official Python SDK
client. Keys are generated here (RSA, P-256, Ed25519) and tokens signed with PyJWT, as an
identity provider would.

- RS256, ES256 and EdDSA tokens reach tools through the grant their claims map to; the
  audit log names the token's subject; the token never reaches the upstream;
- `identity.*` predicates read the token's claims;
- wrong signature, issuer, audience, expiry, not-before, algorithm, or no token: 401 with
  `WWW-Authenticate: Bearer resource_metadata="…"`; Protected Resource Metadata is served
  at the advertised URLs;
- a token without a required scope: 403 `insufficient_scope`; without a matching claim
  rule: 403;
- two people mapped to one grant do not share sessions;
- JWKS from a URL: cached, and an issuer's key rotation is picked up at the first token
  signed with the new key.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from e2e_helpers import (
    Gateway,
    Procs,
    RawSession,
    assert_allowed,
    assert_denied,
    gateway_binary,
    http_client,
    run,
    start_gateway_config,
    start_py_upstream_http,
    started_lazily,
)

ISSUER = "https://idp.example"
PUBLIC_URL = "https://gw.example"
AUDIENCE = f"{PUBLIC_URL}/mcp/py"
METADATA = f"{PUBLIC_URL}/.well-known/oauth-protected-resource/mcp/py"
SUPPORT_POLICY = {
    "version": "1",
    "default": "deny",
    "tools": {
        "echo": {"require": [{"path": "identity.claims.email_verified", "op": "eq", "value": True,
                              "on_deny": "Verified e-mail addresses only."}]},
        "echo_headers": {},
    },
}
ADMINS_POLICY = {"version": "1", "default": "allow"}


def jwk(public_key: Any, kid: str) -> dict[str, Any]:
    if isinstance(public_key, rsa.RSAPublicKey):
        key = RSAAlgorithm.to_jwk(public_key, as_dict=True)
    elif isinstance(public_key, ec.EllipticCurvePublicKey):
        key = ECAlgorithm.to_jwk(public_key, as_dict=True)
    else:
        key = OKPAlgorithm.to_jwk(public_key, as_dict=True)
    return {**key, "kid": kid, "use": "sig"}


class Keys:
    def __init__(self) -> None:
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())
        self.ed = ed25519.Ed25519PrivateKey.generate()
        self.stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def jwks(self) -> dict[str, Any]:
        return {"keys": [jwk(self.rsa.public_key(), "rsa-1"), jwk(self.ec.public_key(), "ec-1"),
                         jwk(self.ed.public_key(), "ed-1")]}


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice@example.com", "iat": now, "exp": now + 300,
            "scope": "mcp", "groups": ["support"], "email_verified": True}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def config_text(upstream: str, jwks_line: str) -> str:
    return f"""
[gateway]
public_url = "{PUBLIC_URL}"

[servers.py]
url = "{upstream}"

[[grants]]
name = "support"
token = "tg-e2e-oauth-unused-support-token-0123"
policies = {{ py = "support.json" }}

[[grants]]
name = "admins"
token = "tg-e2e-oauth-unused-admins-token-01234"
policies = {{ py = "admins.json" }}

[oauth]
issuer = "{ISSUER}"
{jwks_line}
required_scopes = ["mcp"]

[[oauth.claim_rules]]
claim = "groups"
value = "support"
grant = "support"

[[oauth.claim_rules]]
claim = "scope"
value = "admin"
grant = "admins"
"""


class Setup:
    def __init__(self, procs: Procs, workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.keys = Keys()
        (workdir / "jwks.json").write_text(json.dumps(self.keys.jwks()))
        upstream, _ = start_py_upstream_http(procs, name="py_upstream-oauth")
        self.gateway: Gateway = start_gateway_config(
            procs, workdir, config_text(upstream, 'jwks_file = "jwks.json"'),
            policies={"support.json": SUPPORT_POLICY, "admins.json": ADMINS_POLICY}, name="toolgate-oauth")

    def token(self, alg: str = "RS256", key: Any = None, kid: str | None = None, **overrides: Any) -> str:
        default_key, default_kid = {"RS256": (self.keys.rsa, "rsa-1"), "ES256": (self.keys.ec, "ec-1"),
                                    "EdDSA": (self.keys.ed, "ed-1")}[alg]
        return jwt.encode(claims(**overrides), key or default_key, algorithm=alg,
                          headers={"kid": kid or default_kid})


@pytest.fixture(scope="module")
def setup(module_procs: Procs, module_tmp: Path) -> Callable[[], Setup]:
    return started_lazily(lambda: Setup(module_procs, module_tmp / "oauth"))


SOURCES = iter(range(2, 250))


def post_ping(s: Setup, token: str | None) -> httpx.Response:
    """A ping from a loopback source address of its own (127.0.0.N): these tests send many
    refused tokens, and the gateway slows down repeated failures from one address."""
    client = httpx.Client(timeout=30, transport=httpx.HTTPTransport(local_address=f"127.0.0.{next(SOURCES)}"))
    raw = RawSession(s.gateway.server_url("py"), token, client=client)
    return raw.post({"jsonrpc": "2.0", "id": 1, "method": "ping"})


def test_signed_tokens_reach_tools_through_the_grant_their_claims_choose(setup: Callable[[], Setup]) -> None:
    s = setup()
    tokens = {alg: s.token(alg, sub=f"{alg.lower()}@example.com") for alg in ("RS256", "ES256", "EdDSA")}

    async def body() -> None:
        for alg, token in tokens.items():
            async with http_client(s.gateway.server_url("py"), token) as client:
                assert_allowed(await client.call_tool("echo", {"text": alg}))
                seen = await client.call_tool("echo_headers", {})
                assert_allowed(seen)
                text = json.dumps(seen.model_dump(by_alias=True))
                assert token not in text and "authorization" not in text.lower(), \
                    f"the client's token reached the upstream: {text}"
        # A scope word maps to the admins grant, whose policy allows every tool.
        async with http_client(s.gateway.server_url("py"), s.token(scope="mcp admin", groups=[])) as client:
            assert_allowed(await client.call_tool("add", {"a": 1, "b": 2}))

    run(body)
    data = s.gateway.workdir / "toolgate-oauth-data"
    deadline = time.monotonic() + 5
    while True:
        done = subprocess.run([str(gateway_binary()), "audit", "query", "--json", "--data-dir", str(data),
                               "--tool", "echo"], capture_output=True, text=True, timeout=60)
        records = [json.loads(line) for line in done.stdout.splitlines()]
        if len(records) >= 3 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert {(r["grant"], r["identity"]) for r in records} >= {
        ("support", "rs256@example.com"), ("support", "es256@example.com"), ("support", "eddsa@example.com")}, records


def test_identity_predicates_read_the_tokens_claims(setup: Callable[[], Setup]) -> None:
    s = setup()

    async def body() -> None:
        async with http_client(s.gateway.server_url("py"), s.token(email_verified=False)) as client:
            assert_denied(await client.call_tool("echo", {"text": "hi"}),
                          "/tools/echo/require/identity.claims.email_verified-eq", "Verified e-mail addresses only.")

    run(body)


def test_invalid_tokens_get_401_pointing_at_the_resource_metadata(setup: Callable[[], Setup]) -> None:
    s = setup()
    now = int(time.time())
    header = b"eyJhbGciOiJub25lIn0"  # {"alg":"none"}
    payload = jwt.utils.base64url_encode(json.dumps(claims()).encode())
    signed_header, _, signature = s.token().split(".")
    tampered_payload = jwt.utils.base64url_encode(json.dumps(claims(sub="mallory@example.com")).encode()).decode()
    bad = {
        "no token": None,
        "not a JWT": "tg_not_a_grant_token",
        "signed by a stranger": s.token(key=s.keys.stranger),
        "wrong issuer": s.token(iss="https://evil.example"),
        "wrong audience": s.token(aud="https://other.example/mcp/py"),
        "another server's audience": s.token(aud=f"{PUBLIC_URL}/mcp/files"),
        "expired": s.token(exp=now - 120),
        "not valid yet": s.token(nbf=now + 600),
        "no expiry": s.token(exp=None),
        "alg none": f"{header.decode()}.{payload.decode()}.",
        "RSA key named for an EC token": s.token("ES256", kid="rsa-1"),
        "unknown key id": s.token(kid="rsa-2"),
        "tampered payload": f"{signed_header}.{tampered_payload}.{signature}",
        "garbage": "a.b.c",
        "oversized": "x" * 20_000,
    }
    for what, token in bad.items():
        r = post_ping(s, token)
        assert r.status_code == 401, f"{what}: {r.status_code} {r.text}"
        assert r.headers["www-authenticate"] == f'Bearer resource_metadata="{METADATA}"', (what, r.headers)
    assert "audience" in post_ping(s, bad["wrong audience"]).json()["error_description"]
    assert "expired" in post_ping(s, bad["expired"]).json()["error_description"]

    # Huge Authorization headers are refused (401, or 431 past the head-size limit), and the
    # gateway goes on serving valid tokens.
    for size in (100_000, 400_000):
        huge = post_ping(s, "y" * size)
        assert huge.status_code in (401, 431), f"{size}: {huge.status_code} {huge.text}"
    valid = RawSession(s.gateway.server_url("py"), s.token())
    valid.initialize()

    http = httpx.Client(base_url=s.gateway.base, timeout=15)
    per_server = http.get("/.well-known/oauth-protected-resource/mcp/py")
    assert per_server.status_code == 200 and per_server.json() == {
        "resource": AUDIENCE, "authorization_servers": [ISSUER], "scopes_supported": ["mcp"],
        "bearer_methods_supported": ["header"]}, per_server.text
    assert http.get("/.well-known/oauth-protected-resource").json()["resource"] == PUBLIC_URL
    assert http.get("/.well-known/oauth-protected-resource/mcp/nowhere").status_code == 404


def test_missing_scope_is_403_insufficient_scope_and_no_matching_rule_is_403(setup: Callable[[], Setup]) -> None:
    s = setup()
    r = post_ping(s, s.token(scope="read"))
    assert r.status_code == 403, r.text
    assert r.headers["www-authenticate"] == (
        f'Bearer error="insufficient_scope", scope="mcp", resource_metadata="{METADATA}"'), r.headers
    r = post_ping(s, s.token(groups=["sales"]))
    assert r.status_code == 403 and "no claim rule" in r.json()["error"]["message"], r.text


def test_two_people_on_one_grant_do_not_share_sessions(setup: Callable[[], Setup]) -> None:
    s = setup()
    alice = RawSession(s.gateway.server_url("py"), s.token(sub="alice@example.com"))
    alice.initialize()
    bob = RawSession(s.gateway.server_url("py"), s.token(sub="bob@example.com"))
    bob.session_id = alice.session_id
    r = bob.post(bob.message("tools/list", {}))
    assert r.status_code == 404, f"bob used alice's session: {r.status_code} {r.text}"
    r = alice.post(alice.message("tools/list", {}))
    assert r.status_code == 200, r.text


class JwksServer:
    """An identity provider's JWKS endpoint whose key set can be swapped; counts fetches."""

    def __init__(self) -> None:
        self.document: dict[str, Any] = {"keys": []}
        self.fetches = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                server.fetches += 1
                body = json.dumps(server.document).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/jwks.json"


def test_keys_from_a_jwks_url_are_cached_and_rotation_is_picked_up(procs: Procs, tmp_path: Path) -> None:
    idp = JwksServer()
    old_key, new_key = ed25519.Ed25519PrivateKey.generate(), ec.generate_private_key(ec.SECP256R1())
    idp.document = {"keys": [jwk(old_key.public_key(), "2026-old")]}
    upstream, _ = start_py_upstream_http(procs, name="py_upstream-oauth-url")
    gw = start_gateway_config(procs, tmp_path, config_text(upstream, f'jwks_url = "{idp.url}"'),
                              policies={"support.json": SUPPORT_POLICY, "admins.json": ADMINS_POLICY},
                              name="toolgate-oauth-url")
    try:
        old_token = jwt.encode(claims(), old_key, algorithm="EdDSA", headers={"kid": "2026-old"})
        url = gw.server_url("py")
        for _ in range(3):
            RawSession(url, old_token).initialize()
        assert idp.fetches == 1, f"the JWKS must be cached, it was fetched {idp.fetches} times"
        # The issuer rotates: the new key only. The first token naming it fetches the set again.
        idp.document = {"keys": [jwk(new_key.public_key(), "2026-new")]}
        time.sleep(2.1)  # the least gap between fetches
        new_token = jwt.encode(claims(), new_key, algorithm="ES256", headers={"kid": "2026-new"})
        RawSession(url, new_token).initialize()
        assert idp.fetches == 2
        # A made-up kid right after cannot make the gateway fetch again at once.
        stray = jwt.encode(claims(), new_key, algorithm="ES256", headers={"kid": "made-up"})
        assert RawSession(url, stray).post({"jsonrpc": "2.0", "id": 1, "method": "ping"}).status_code == 401
        assert idp.fetches == 2
        # The issuer goes away: a fetch fails (and is logged), the cached keys stay in use.
        idp.httpd.shutdown()
        idp.httpd.server_close()
        time.sleep(2.1)
        assert RawSession(url, stray).post({"jsonrpc": "2.0", "id": 1, "method": "ping"}).status_code == 401
        RawSession(url, new_token).initialize()
        deadline = time.monotonic() + 5
        while "cannot fetch the JWKS" not in gw.proc.stderr():
            assert time.monotonic() < deadline, "a failed JWKS fetch was not logged"
            time.sleep(0.05)
    finally:
        idp.httpd.shutdown()
