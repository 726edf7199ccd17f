"""Observability (issue 10): Prometheus metrics at `/metrics` — calls by decision,
refusals by rule, how upstreams answered, request durations, store and upstream health —
counted exactly for the calls an official Python SDK client made; the page's access rule
(open without admin tokens, any admin token once they are configured); and structured logs
(`--log-format json`: every line one JSON object, decisions with their fields); and
OpenTelemetry traces (`[telemetry] otlp_endpoint`): one span per `tools/call`, exported over
OTLP/HTTP JSON to a collector, with the audit record's attributes; a caller's W3C
`traceparent` is continued, and the upstream is told the gateway's span as its parent.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from pathlib import Path

import httpx
from mcp import MCPError

from e2e_helpers import (
    FIXTURES,
    PYTHON,
    Procs,
    RawSession,
    http_client,
    run,
    start_gateway_config,
    ready_url,
    start_py_upstream_http,
)

TOKEN = "tg-e2e-metrics-token-0123456789"
VIEWER = "tg-e2e-metrics-viewer-0123456789"
POLICY = {"version": "1", "default": "deny", "hide": ["secret_admin"], "tools": {
    "echo": {}, "jsonrpc_error": {}, "echo_headers": {},
    "delete_everything": {"action": "deny", "on_deny": "No."},
    "add": {"limits": [{"counter": "adds", "window": "day", "max": 1}]},
}}


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def config_for(upstream: str, sections: str = "", grant: str = "metrics") -> str:
    """One server `py` at `upstream`, one grant with POLICY on it, and `sections` between."""
    return f"""
[gateway]

[servers.py]
url = "{upstream}"
{sections}
[[grants]]
name = "{grant}"
token = "{TOKEN}"
policies = {{ py = "policy.json" }}
"""


def samples(text: str) -> dict[str, float]:
    """Sample lines by their name and labels as written."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


def test_metrics_count_decisions_rules_outcomes_and_health(procs: Procs, tmp_path: Path) -> None:
    upstream = start_py_upstream_http(procs, name="py_upstream-metrics")[0]
    gw = start_gateway_config(procs, tmp_path, config_for(upstream), policies={"policy.json": POLICY},
                              name="toolgate-metrics",
                              extra_args=["--log-format", "json"])

    async def body() -> None:
        async with http_client(gw.server_url("py"), TOKEN) as client:
            for text in ("a", "b", "c"):
                await client.call_tool("echo", {"text": text})
            await client.call_tool("delete_everything", {})
            await client.call_tool("charge", {"amount": 1, "reason": "r"})  # default deny
            await client.call_tool("add", {"a": 1, "b": 2})
            await client.call_tool("add", {"a": 1, "b": 2})  # rate limited
            for tool in ("jsonrpc_error", "secret_admin"):
                try:
                    await client.call_tool(tool, {"message": "boom"} if tool == "jsonrpc_error" else {})
                except MCPError:
                    pass

    run(body)
    response = httpx.get(f"{gw.base}/metrics", timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4"), response.headers
    got = samples(response.text)
    expected = {
        'toolgate_calls_total{server="py",decision="allow"}': 5,  # 3 echo, 1 add, jsonrpc_error
        'toolgate_calls_total{server="py",decision="deny"}': 2,
        'toolgate_calls_total{server="py",decision="rate_limited"}': 1,
        'toolgate_calls_total{server="py",decision="hide"}': 1,
        'toolgate_decisions_by_rule_total{server="py",decision="deny",rule="/tools/delete_everything/action"}': 1,
        'toolgate_decisions_by_rule_total{server="py",decision="deny",rule="(default deny)"}': 1,
        'toolgate_decisions_by_rule_total{server="py",decision="rate_limited",rule="/tools/add/limits/adds"}': 1,
        'toolgate_decisions_by_rule_total{server="py",decision="hide",rule="(hidden)"}': 1,
        'toolgate_upstream_outcomes_total{server="py",outcome="error",code="-32603"}': 1,
        "toolgate_audit_store_up": 1,
        "toolgate_audit_write_failures_total": 0,
        "toolgate_counter_store_up": 1,
        "toolgate_sessions": 0,  # the SDK client closed its session
        'toolgate_upstream_up{server="py"}': 1,
    }
    for key, value in expected.items():
        assert got.get(key) == value, f"{key}: {got.get(key)} (expected {value})\n{response.text}"
    # Every forwarded request (initialize, the list the SDK asks for, the calls …) has its
    # duration; the four forwarded calls are among them.
    count = got['toolgate_request_duration_seconds_count{server="py"}']
    assert count >= 4 and got['toolgate_request_duration_seconds_bucket{server="py",le="+Inf"}'] == count
    assert got['toolgate_upstream_outcomes_total{server="py",outcome="ok",code=""}'] >= 4
    buckets = [v for k, v in got.items() if k.startswith("toolgate_request_duration_seconds_bucket")]
    assert buckets == sorted(buckets), "buckets are cumulative"
    assert re.search(r'^toolgate_build_info\{version="[^"]+"\} 1$', response.text, re.M), response.text

    # The log: one JSON object per line; the refusal with its decision fields.
    lines = [json.loads(line) for line in gw.proc.stderr().splitlines() if line.strip()]
    assert all({"timestamp", "level", "target", "message"} <= line.keys() for line in lines), lines[:3]
    refusal = [line for line in lines if line.get("rule") == "/tools/delete_everything/action"]
    assert len(refusal) == 1, lines
    assert refusal[0]["decision"] == "deny" and refusal[0]["message"] == "No." and refusal[0]["tool"] == "delete_everything"


def test_metrics_need_an_admin_token_once_admins_are_configured(procs: Procs, tmp_path: Path) -> None:
    upstream = start_py_upstream_http(procs, name="py_upstream-metrics-admin")[0]
    admins = f"""
[admin]
token_sha256 = "{sha("tg-e2e-metrics-admin-0123456789")}"

[[admin.members]]
name = "vic"
role = "viewer"
token_sha256 = "{sha(VIEWER)}"
"""
    gw = start_gateway_config(procs, tmp_path, config_for(upstream, admins), policies={"policy.json": POLICY},
                              name="toolgate-metrics-admin")
    refused = httpx.get(f"{gw.base}/metrics", timeout=10)
    assert refused.status_code == 401 and "admin token" in refused.text, refused.text
    wrong = httpx.get(f"{gw.base}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    assert wrong.status_code == 401, "a grant token is not an admin token"
    viewer = httpx.get(f"{gw.base}/metrics", headers={"Authorization": f"Bearer {VIEWER}"}, timeout=10)
    assert viewer.status_code == 200 and "toolgate_calls_total" in viewer.text, viewer.text


def test_one_span_per_tool_call_reaches_an_otlp_collector(procs: Procs, tmp_path: Path) -> None:
    received = tmp_path / "spans.jsonl"
    collector = procs.start("otlp_receiver", [PYTHON, str(FIXTURES / "otlp_receiver.py"), "--record", str(received)])
    collector_url = collector.wait_for(ready_url)
    upstream = start_py_upstream_http(procs, name="py_upstream-traces")[0]
    telemetry = f"""
[telemetry]
otlp_endpoint = "{collector_url}"
service_name = "toolgate-e2e"
"""
    gw = start_gateway_config(procs, tmp_path, config_for(upstream, telemetry, grant="traced"),
                              policies={"policy.json": POLICY}, name="toolgate-traces")

    async def body() -> None:
        async with http_client(gw.server_url("py"), TOKEN) as client:
            await client.call_tool("echo", {"text": "a"})
            await client.call_tool("delete_everything", {})
            try:
                await client.call_tool("jsonrpc_error", {"message": "boom"})
            except MCPError:
                pass

    run(body)
    # A caller in a trace of its own: the span joins it, and the upstream hears of the span.
    caller_trace, caller_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    traced = RawSession(gw.server_url("py"), TOKEN,
                        extra_headers={"traceparent": f"00-{caller_trace}-{caller_span}-01", "tracestate": "k=v"})
    traced.initialize()
    r, answer = traced.request("tools/call", {"name": "echo_headers", "arguments": {}})
    seen_upstream = answer["result"]["structuredContent"]
    traced.close()
    assert seen_upstream["tracestate"] == "k=v", seen_upstream
    next_hop = seen_upstream["traceparent"].split("-")
    assert next_hop[0] == "00" and next_hop[1] == caller_trace and next_hop[3] == "01", next_hop
    assert next_hop[2] != caller_span, next_hop
    deadline = time.monotonic() + 10
    while True:
        exports = [json.loads(line) for line in received.read_text().splitlines() if line.strip()]
        spans = [(resource, span) for export in exports for resource in export["resourceSpans"]
                 for scope in resource["scopeSpans"] for span in scope["spans"]]
        if len(spans) >= 4 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert len(spans) == 4, spans  # the tools/call requests only
    by_name = {span["name"]: span for _, span in spans}
    assert set(by_name) == {"tools/call echo", "tools/call delete_everything", "tools/call jsonrpc_error",
                            "tools/call echo_headers"}, by_name
    continued = by_name.pop("tools/call echo_headers")
    assert (continued["traceId"], continued["parentSpanId"], continued["spanId"]) == (
        caller_trace, caller_span, next_hop[2]), continued
    assert all("parentSpanId" not in span for span in by_name.values()), by_name
    assert len({span["traceId"] for span in by_name.values()} | {caller_trace}) == 4, by_name
    for resource, span in spans:  # including the continued one
        assert {"key": "service.name", "value": {"stringValue": "toolgate-e2e"}} in resource["resource"]["attributes"]
        assert len(span["traceId"]) == 32 and len(span["spanId"]) == 16
        assert int(span["startTimeUnixNano"]) <= int(span["endTimeUnixNano"])

    def attributes(span: dict) -> dict[str, str]:
        return {a["key"]: a["value"]["stringValue"] for a in span["attributes"]}

    echo = attributes(by_name["tools/call echo"])
    assert echo["mcp.server"] == "py" and echo["toolgate.decision"] == "allow" and echo["toolgate.grant"] == "traced"
    assert echo["toolgate.upstream_status"] == "ok" and by_name["tools/call echo"]["status"] == {"code": 0}
    denied = attributes(by_name["tools/call delete_everything"])
    assert denied["toolgate.decision"] == "deny" and denied["toolgate.rule"] == "/tools/delete_everything/action"
    assert "toolgate.upstream_status" not in denied
    failed = by_name["tools/call jsonrpc_error"]
    assert failed["status"] == {"code": 2, "message": "error -32603"}, failed
