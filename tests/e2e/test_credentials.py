"""Credentials (SPEC §5): the client's `Authorization` and cookies never reach the
upstream; the server's configured headers (`${VAR}` expanded from the gateway's
environment) are injected instead. Upstream: header_recorder.py, which logs the headers of
every request it receives (including the gateway's own catalogue sessions)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import httpx

from e2e_helpers import Gateway, Procs, RawSession, assert_allowed, http_client, run, start_gateway_config, start_header_recorder

TOKEN = "tg-e2e-credentials-grant-token-42"
API_KEY = "sk-e2e-upstream-key-7f3a9c"
ALLOW_ALL = {"version": "1", "default": "allow"}


def start_recorded_gateway(procs: Procs, tmp_path: Path, name: str, *, extra: str = "",
                           env: dict[str, str] | None = None) -> tuple[Gateway, Path]:
    """A gateway in front of header_recorder.py (server `rec`, the configured `X-Api-Key`
    injected from the environment), one grant with TOKEN; returns it and the record file."""
    record = tmp_path / "headers.jsonl"
    upstream = start_header_recorder(procs, record, "--sse")
    config = f"""
[gateway]
data_dir = "data"
{extra}
[servers.rec]
url = "{upstream}"
headers = {{ "X-Api-Key" = "${{TG_TEST_KEY}}" }}

[[grants]]
name = "creds"
token = "{TOKEN}"
policies = {{ rec = "allow.json" }}
"""
    gw = start_gateway_config(procs, tmp_path, config, policies={"allow.json": ALLOW_ALL},
                              env={"TG_TEST_KEY": API_KEY, **(env or {})}, name=name)
    return gw, record


def test_client_credentials_are_not_forwarded(procs: Procs, tmp_path: Path) -> None:
    gw, record = start_recorded_gateway(procs, tmp_path, "toolgate-creds")
    url = gw.server_url("rec")
    client_headers = {"Cookie": "session=abc", "X-Custom": "1"}

    async def body() -> None:
        async with http_client(url, TOKEN, headers=client_headers) as client:
            tools = await client.list_tools()
            assert [t.name for t in tools.tools] == ["whoami"]
            result = await client.call_tool("whoami", {})
            assert_allowed(result)
            seen = result.structured_content["headers"]
            assert "authorization" not in seen and "cookie" not in seen, seen
            assert seen.get("x-api-key") == API_KEY, seen
            assert json.loads(result.content[0].text) == seen

    run(body)

    # The same over raw HTTP, with more ways of carrying credentials.
    raw = RawSession(url, TOKEN, extra_headers={"Cookie": "session=abc; other=def", "X-Custom": "1"})
    try:
        raw.initialize()
        resp, msg = raw.request("tools/call", {"name": "whoami", "arguments": {}})
        assert resp.status_code == 200 and msg["result"]["isError"] is False, msg
        resp, msg = raw.request("ping")
        assert resp.status_code == 200 and msg["result"] == {}, msg
    finally:
        raw.close()

    entries = [json.loads(line) for line in record.read_text().splitlines() if line.strip()]
    rpcs = [e.get(":rpc") for e in entries]
    for method in ("initialize", "notifications/initialized", "tools/list", "tools/call", "ping"):
        assert method in rpcs, f"{method} never reached the upstream: {rpcs}"
    assert any(e[":method"] == "DELETE" for e in entries), "session ends are forwarded as DELETE"
    for entry in entries:
        where = f"{entry[':method']} {entry.get(':rpc')}"
        assert "authorization" not in entry, f"{where}: Authorization forwarded upstream: {entry}"
        assert "cookie" not in entry, f"{where}: Cookie forwarded upstream: {entry}"
        assert TOKEN not in json.dumps(entry), f"{where}: the grant token leaked upstream: {entry}"
        assert entry.get("x-api-key") == API_KEY, f"{where}: configured X-Api-Key not injected: {entry}"


def test_no_secret_reaches_the_logs_or_the_data_directory(procs: Procs, tmp_path: Path) -> None:
    """SPEC §5 (issue 9, security properties): with the most verbose log (`TOOLGATE_LOG=trace`),
    neither the grant token, nor a wrong token a client tried, nor the admin token, nor the
    upstream's injected API key appears in anything the gateway writes: its stdout and
    stderr, the embedded store, the audit journal."""
    admin = "tg-e2e-admin-token-never-logged-5c1d"
    wrong = "tg-e2e-wrong-token-never-logged-8e2f"
    gw, _ = start_recorded_gateway(
        procs, tmp_path, "toolgate-secrets", env={"TOOLGATE_LOG": "trace"},
        extra=f'\n[admin]\ntoken_sha256 = "{hashlib.sha256(admin.encode()).hexdigest()}"\n')
    url = gw.server_url("rec")

    async def body() -> None:
        async with http_client(url, TOKEN) as client:
            assert_allowed(await client.call_tool("whoami", {}))

    run(body)
    with httpx.Client(timeout=10) as http:
        refused = http.post(url, headers={"Authorization": f"Bearer {wrong}", "Content-Type": "application/json",
                                          "Accept": "application/json, text/event-stream"},
                            content=b'{"jsonrpc":"2.0","id":1,"method":"ping"}')
        assert refused.status_code == 401, refused.text
        listed = http.get(f"{gw.base}/admin/api/grants", headers={"Authorization": f"Bearer {admin}"})
        assert listed.status_code == 200, listed.text
        denied = http.get(f"{gw.base}/admin/api/grants", headers={"Authorization": f"Bearer {wrong}"})
        assert denied.status_code == 401, denied.text
    gw.proc.stop()
    written = {"stdout": gw.proc.stdout(), "stderr": gw.proc.stderr()}
    assert "whoami" in written["stderr"] or "creds" in written["stderr"], "the trace log was not captured"
    data = tmp_path / "toolgate-secrets-data"
    assert (data / "toolgate.db").is_file(), "the data directory was not where expected"
    for path in data.rglob("*"):
        if path.is_file():
            written[str(path)] = path.read_bytes().decode("latin-1")
    for name, secret in [("grant token", TOKEN), ("wrong token", wrong), ("admin token", admin),
                         ("upstream API key", API_KEY)]:
        for where, text in written.items():
            assert secret not in text, f"the {name} appears in {where}"
