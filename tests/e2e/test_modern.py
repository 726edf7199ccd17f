"""The stateless protocol, 2026-07-28, through the gateway (issue 12; SPEC §4, §5).

- the official Python SDK client in modern mode (pinned, and `auto`, which discovers)
  through toolgate to the Python SDK server speaking 2026-07-28: discover, list (hidden tools
  removed), allowed, denied, hidden and rate-limited calls; the upstream's own
  `input_required` rounds (elicitation, sampling) carried through; toolgate's own refusals are valid
  2026-07-28 results (`resultType`); the audit log records each call, with no session;
- mixed eras on one upstream: a legacy client and a modern client of one grant at once,
  sharing its counters;
- a modern client in front of a stdio upstream (which the gateway reaches in the
  session-based protocol): `auto` falls back to `initialize` and works; a client pinned to
  2026-07-28 is refused with `-32022` naming the revisions it is reached with;
- in front of a legacy-only HTTP upstream (`server-everything`): the gateway does not
  translate — the client meets exactly what it meets directly (`auto` falls back and works,
  a pinned client gets the upstream's refusal);
- header rules, with raw HTTP: `Mcp-Method` and `Mcp-Name` (plain and base64) checked against
  the body — a mismatch is 400 with `-32020` and reaches neither the policy nor the upstream;
  a missing envelope is 400 `-32602`; an unsupported revision is 400 `-32022` with the
  supported list; `Mcp-Param-*` headers are forwarded;
- `subscriptions/listen` streams through the gateway, and outlive the server's request
  timeout (which covers their start only);
- approvals asked in-band through `input_required` (SPEC §6): the SDK client's elicitation
  callback approves (the call runs) or declines (it is refused); the `requestState` is bound
  and signed — altered, issued for other arguments, or presented again after use, it is
  refused with 400 `-32602` and nothing runs.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from mcp import MCPError

from e2e_helpers import (
    PY_UPSTREAM,
    PYTHON,
    ClientCallbacks,
    Procs,
    assert_allowed,
    assert_denied,
    assert_rate_limited,
    assert_unknown_tool,
    audit_records,
    http_client,
    run,
    start_everything_http,
    start_gateway_config,
    start_py_upstream_http,
)

TOKEN = "tg-e2e-modern-0123456789"
MODERN = "2026-07-28"
DAY_MS = 86_400_000
POLICY: dict[str, Any] = {"version": "1", "default": "deny", "hide": ["secret_admin"], "tools": {
    "echo": {}, "echo_headers": {}, "record_run": {}, "ask_name": {}, "sample_haiku": {},
    "add": {"limits": [{"counter": "adds", "window": "day", "max": 2}]},
    "charge": {"deny_if": [{"path": "args.amount", "op": "gt", "value": 100, "on_deny": "too much"}]},
}}


def start(procs: Procs, tmp_path: Path, ran: Path | None = None, policy: dict[str, Any] | None = None,
          timeout: str = "60s") -> Any:
    upstream = start_py_upstream_http(procs, name="py_upstream-modern", ran_file=ran)[0]
    return start_gateway_config(procs, tmp_path, f"""
[gateway]

[servers.py]
url = "{upstream}"
timeout = "{timeout}"

[servers.local]
command = "{PYTHON}"
args = ["{PY_UPSTREAM}", "--transport", "stdio"]

[[grants]]
name = "modern"
token = "{TOKEN}"
policies = {{ py = "policy.json", local = "policy.json" }}
""", policies={"policy.json": policy or POLICY}, name="toolgate-modern")


def test_a_modern_client_through_the_gateway(procs: Procs, tmp_path: Path) -> None:
    gw = start(procs, tmp_path)
    url = gw.server_url("py")

    async def body() -> None:
        for mode in (MODERN, "auto"):
            async with http_client(url, TOKEN, mode=mode) as client:
                assert client.protocol_version == MODERN, (mode, client.protocol_version)
                names = {t.name for t in (await client.list_tools()).tools}
                assert "echo" in names and "secret_admin" not in names, names
                echo = await client.call_tool("echo", {"text": mode})
                assert_allowed(echo)
                assert echo.result_type == "complete"
                denied = await client.call_tool("charge", {"amount": 500, "reason": "r"})
                assert_denied(denied, "/tools/charge/deny_if/args.amount-gt", "too much")
                assert denied.result_type == "complete"
                with pytest.raises(MCPError) as hidden:
                    await client.call_tool("secret_admin", {})
                assert_unknown_tool(hidden.value, "secret_admin")
        # Mixed eras on one upstream, one grant, one budget of two adds a day.
        async with http_client(url, TOKEN, mode="legacy") as legacy, \
                http_client(url, TOKEN, mode=MODERN) as modern:
            assert legacy.protocol_version != MODERN
            assert_allowed(await legacy.call_tool("add", {"a": 1, "b": 2}))
            assert_allowed(await modern.call_tool("add", {"a": 1, "b": 2}))
            limited = await modern.call_tool("add", {"a": 1, "b": 2})
            assert_rate_limited(limited, "/tools/add/limits/adds", "2", "day", "adds", DAY_MS)
            assert limited.result_type == "complete"
            assert_rate_limited(await legacy.call_tool("add", {"a": 1, "b": 2}), "/tools/add/limits/adds",
                                "2", "day", "adds", DAY_MS)
            assert_allowed(await legacy.call_tool("echo", {"text": "still legacy"}))

    run(body, timeout=90)

    # The upstream's own input_required rounds pass through: its elicitation and sampling
    # reach this client's callbacks, the retried call (the upstream's requestState, not the
    # gateway's) is decided again and forwarded, and the final result comes back.
    async def rounds() -> None:
        cb = ClientCallbacks(elicit_action="accept", elicit_content={"name": "Ada"}, sampling_model="m",
                             sampling_text="autumn gate / policy")
        async with http_client(url, TOKEN, mode=MODERN, **cb.kwargs()) as client:
            greeted = await client.call_tool("ask_name", {})
            assert_allowed(greeted)
            assert [c.text for c in greeted.content] == ["Hello, Ada"]
            haiku = await client.call_tool("sample_haiku", {"topic": "gateways"})
            assert_allowed(haiku)
            assert [c.text for c in haiku.content] == ["autumn gate / policy"]
        assert len(cb.elicitations) == 1 and len(cb.samplings) == 1, (cb.elicitations, cb.samplings)

    run(rounds, timeout=60)
    calls = [r for r in audit_records(tmp_path / "toolgate-modern-data") if r["method"] == "tools/call"]
    modern_calls = calls[:6]
    assert [(r["tool"], r["decision"]) for r in modern_calls] == [
        ("echo", "allow"), ("charge", "deny"), ("secret_admin", "hide")] * 2, modern_calls
    assert all(r["session_id"] is None for r in modern_calls), modern_calls
    discovered = [r for r in audit_records(tmp_path / "toolgate-modern-data") if r["method"] == "server/discover"]
    assert discovered and all(r["decision"] == "allow" for r in discovered), discovered


def test_modern_clients_in_front_of_a_stdio_upstream(procs: Procs, tmp_path: Path) -> None:
    gw = start(procs, tmp_path)
    url = gw.server_url("local")

    async def auto() -> None:
        async with http_client(url, TOKEN, mode="auto") as client:
            assert client.protocol_version == "2025-11-25", client.protocol_version
            assert_allowed(await client.call_tool("echo", {"text": "fell back to initialize"}))

    async def pinned() -> None:
        async with http_client(url, TOKEN, mode=MODERN) as client:
            await client.call_tool("echo", {"text": "never"})

    run(auto, timeout=60)
    with pytest.raises(BaseException) as refused:
        run(pinned, timeout=60)
    assert "-32022" in repr(refused.value) or "session-based protocol" in repr(refused.value), repr(refused.value)

    r = httpx.post(url, headers=modern_headers("tools/call", "echo"), content=json.dumps(call("echo")), timeout=10)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == -32022 and "2025-11-25" in error["data"]["supported"], error
    assert "initialize" in error["message"], error


def call(name: str, version: str = MODERN, arguments: dict[str, Any] | None = None,
         meta: dict[str, Any] | None = None) -> dict[str, Any]:
    envelope = {"io.modelcontextprotocol/protocolVersion": version,
                "io.modelcontextprotocol/clientCapabilities": {}} if meta is None else meta
    return {"jsonrpc": "2.0", "id": 7, "method": "tools/call",
            "params": {"name": name, "arguments": arguments or {}, "_meta": envelope}}


def modern_headers(method: str, name: str | None, version: str = MODERN, **extra: str) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json",
               "Accept": "application/json, text/event-stream", "MCP-Protocol-Version": version,
               "Mcp-Method": method, **extra}
    if name is not None:
        headers["Mcp-Name"] = name
    return headers


def answer_of(r: httpx.Response) -> dict[str, Any]:
    if r.headers.get("content-type", "").startswith("text/event-stream"):
        messages = [json.loads(line[5:]) for line in r.text.splitlines() if line.startswith("data:") and line[5:].strip()]
        return [m for m in messages if "result" in m or "error" in m][-1]
    return r.json()


def test_header_rules_are_checked_against_the_body(procs: Procs, tmp_path: Path) -> None:
    ran = tmp_path / "ran"
    gw = start(procs, tmp_path, ran=ran)
    url = gw.server_url("py")

    def post(body: dict[str, Any], headers: dict[str, str]) -> httpx.Response:
        return httpx.post(url, headers=headers, content=json.dumps(body), timeout=10)

    # The header names an allowed tool, the body another: refused before any policy.
    r = post(call("record_run", arguments={"tag": "smuggled"}), modern_headers("tools/call", "echo"))
    assert r.status_code == 400 and r.json()["error"]["code"] == -32020, r.text
    assert "Mcp-Name" in r.json()["error"]["message"]
    assert not ran.exists(), "a request whose headers disagree with its body ran"
    r = post(call("echo", arguments={"text": "x"}), modern_headers("tools/list", "echo"))
    assert r.status_code == 400 and r.json()["error"]["code"] == -32020, r.text
    # The base64 form of Mcp-Name is decoded before the comparison.
    encoded = "=?base64?" + base64.b64encode(b"record_run").decode() + "?="
    r = post(call("record_run", arguments={"tag": "b64"}), modern_headers("tools/call", encoded))
    assert r.status_code == 200 and "result" in answer_of(r), r.text
    assert ran.read_text().split() == ["b64"]
    # Missing envelope; an unsupported revision.
    r = post(call("echo", meta={}), modern_headers("tools/call", "echo"))
    assert r.status_code == 400 and r.json()["error"]["code"] == -32602, r.text
    r = post(call("echo", version="2027-01-01"), modern_headers("tools/call", "echo", version="2027-01-01"))
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == -32022 and error["data"] == {"supported": [MODERN], "requested": "2027-01-01"}, error
    # Mcp-Param-* headers reach the upstream.
    r = post(call("echo_headers"), modern_headers("tools/call", "echo_headers", **{"Mcp-Param-Region": "eu-west"}))
    assert r.status_code == 200, r.text
    seen = answer_of(r)["result"]["structuredContent"]
    assert seen.get("mcp-param-region") == "eu-west" and seen.get("mcp-name") == "echo_headers", seen
    assert "authorization" not in seen, seen


APPROVAL_POLICY: dict[str, Any] = {"version": "1", "default": "deny", "tools": {
    "echo": {}, "record_run": {"action": "require_approval", "approval": {"timeout": "5m", "reuse": "once"}}}}


def test_approvals_are_asked_with_input_required(procs: Procs, tmp_path: Path) -> None:
    ran = tmp_path / "ran"
    gw = start(procs, tmp_path, ran=ran, policy=APPROVAL_POLICY)
    url = gw.server_url("py")

    def tags() -> list[str]:
        return ran.read_text().split() if ran.exists() else []

    async def with_answer(action: str, tag: str) -> Any:
        cb = ClientCallbacks(elicit_action=action, elicit_content={"approve": True}, sampling_model="m",
                             sampling_text="t")
        async with http_client(url, TOKEN, mode=MODERN, **cb.kwargs()) as client:
            result = await client.call_tool("record_run", {"tag": tag})
        assert len(cb.elicitations) == 1, cb.elicitations
        question = cb.elicitations[0].message
        assert "record_run" in question and tag in question and "py" in question, question
        return result

    async def flows() -> None:
        approved = await with_answer("accept", "approved-run")
        assert_allowed(approved)
        assert tags() == ["approved-run"]
        declined = await with_answer("decline", "declined-run")
        assert declined.is_error and "declined by the approver" in declined.content[0].text, declined
        assert tags() == ["approved-run"]

    run(flows, timeout=60)

    # The same flow by hand: the state is bound and signed, and good once.
    capable = {"io.modelcontextprotocol/protocolVersion": MODERN,
               "io.modelcontextprotocol/clientCapabilities": {"elicitation": {}}}

    def post(arguments: dict[str, Any], **extra: Any) -> httpx.Response:
        body = call("record_run", arguments=arguments, meta=capable)
        body["params"].update(extra)
        return httpx.post(url, headers=modern_headers("tools/call", "record_run"), content=json.dumps(body), timeout=10)

    asked = answer_of(post({"tag": "by-hand"}))["result"]
    assert asked["resultType"] == "input_required", asked
    question = asked["inputRequests"]["toolgate-approval"]
    assert question["method"] == "elicitation/create" and "by-hand" in question["params"]["message"], question
    state = asked["requestState"]
    yes = {"toolgate-approval": {"action": "accept", "content": {"approve": True}}}

    def refused(r: httpx.Response, says: str) -> None:
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["code"] == -32602 and says in error["message"], error

    altered = state[:-2] + ("AA" if not state.endswith("AA") else "BB")
    refused(post({"tag": "by-hand"}, requestState=altered, inputResponses=yes), "altered")
    refused(post({"tag": "other-arguments"}, requestState=state, inputResponses=yes), "issued for another call")
    refused(post({"tag": "by-hand"}, requestState=state), "inputResponses lacks")
    assert tags() == ["approved-run"], "a refused state let a call run"
    ran_now = post({"tag": "by-hand"}, requestState=state, inputResponses=yes)
    assert ran_now.status_code == 200 and answer_of(ran_now)["result"].get("isError") is not True, ran_now.text
    assert tags() == ["approved-run", "by-hand"]
    refused(post({"tag": "by-hand"}, requestState=state, inputResponses=yes), "used already")
    assert tags() == ["approved-run", "by-hand"]
    # The admin stream has the approvals' story: asked, decided in-band, used.
    events = [e["action"] for e in audit_records(tmp_path / "toolgate-modern-data", "--admin")]
    assert "approval_approved" in events and "approval_denied" in events and "approval_used" in events, events


def test_subscriptions_are_relayed_and_outlive_the_request_timeout(procs: Procs, tmp_path: Path) -> None:
    policy = {"version": "1", "default": "deny", "tools": {"publish_tools_changed": {}}}
    gw = start(procs, tmp_path, policy=policy, timeout="2s")
    url = gw.server_url("py")

    async def body() -> None:
        async with http_client(url, TOKEN, mode=MODERN) as listener, \
                http_client(url, TOKEN, mode=MODERN) as caller:
            async with listener.listen(tools_list_changed=True) as subscription:
                assert subscription.honored.tools_list_changed
                await anyio.sleep(3)  # past the server's 2 s timeout
                assert_allowed(await caller.call_tool("publish_tools_changed", {}))
                with anyio.fail_after(10):
                    async for event in subscription:
                        assert type(event).__name__ == "ToolsListChanged", event
                        break

    run(body, timeout=60)


def test_a_legacy_only_http_upstream_is_met_as_it_is(procs: Procs, tmp_path: Path) -> None:
    everything = start_everything_http(procs)
    gw = start_gateway_config(procs, tmp_path, f"""
[servers.everything]
url = "{everything}"

[[grants]]
name = "modern"
token = "{TOKEN}"
policies = {{ everything = "policy.json" }}
""", policies={"policy.json": {"version": "1", "default": "allow"}}, name="toolgate-modern-everything")

    async def outcome(url: str, token: str | None, mode: str) -> tuple[str, str]:
        try:
            async with http_client(url, token, mode=mode) as client:
                echo = await client.call_tool("echo", {"message": "hi"})
                return client.protocol_version, echo.content[0].text
        except BaseException as e:  # the SDK raises it inside an exception group
            while isinstance(e, BaseExceptionGroup) and e.exceptions:
                e = e.exceptions[0]
            assert isinstance(e, MCPError), repr(e)
            return "refused", e.error.message

    async def body() -> None:
        for mode in ("auto", MODERN):
            direct = await outcome(everything, None, mode)
            through = await outcome(gw.server_url("everything"), TOKEN, mode)
            assert through == direct, (mode, direct, through)
            if mode == "auto":
                assert direct == ("2025-11-25", "Echo: hi"), direct
            else:
                assert direct[0] == "refused", direct

    run(body, timeout=90)
