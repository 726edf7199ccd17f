"""Shadow mode (issue 10; SPEC §2.1 `[servers.X] shadow`, §3 policy `"shadow": true`):
decisions are computed and audited but not enforced, so a new policy can be watched before
it bites.

Per server and per policy, with an official Python SDK client against the Python SDK
upstream: every call a policy would deny, hide, rate-limit or hold for approval runs (the
upstream records it), its audit record carries the decision, the rule and `"shadow": true`,
hidden tools stay listed, and the same policy enforced on another server refuses the same
calls. Shadow limits count on shadow counters: they report `rate_limited` when the policy's
limit would have refused, and leave the real budget untouched. `/metrics` counts shadow
calls as allowed and what was decided apart.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
from mcp import MCPError

from e2e_helpers import (
    Procs,
    assert_allowed,
    assert_denied,
    assert_rate_limited,
    assert_unknown_tool,
    audit_records,
    http_client,
    run,
    start_gateway_config,
    start_py_upstream_http,
)

ALICE = "tg-e2e-shadow-alice-0123456789"
BOB = "tg-e2e-shadow-bob-0123456789"
DAY_MS = 86_400_000

POLICY: dict[str, Any] = {"version": "1", "default": "deny", "hide": ["secret_admin"], "tools": {
    "record_run": {"deny_if": [{"path": "args.tag", "op": "eq", "value": "bad", "on_deny": "no bad tags"}],
                   "limits": [{"counter": "runs", "window": "day", "max": 2}]},
    "charge": {"action": "require_approval"},
}}


def test_shadow_mode_decides_and_audits_but_does_not_enforce(procs: Procs, tmp_path: Path) -> None:
    ran = tmp_path / "ran"
    upstream = start_py_upstream_http(procs, name="py_upstream-shadow", ran_file=ran)[0]
    config = f"""
[gateway]

[servers.enforced]
url = "{upstream}"

[servers.watched]
url = "{upstream}"
shadow = true

[[grants]]
name = "alice"
token = "{ALICE}"
policies = {{ enforced = "policy.json", watched = "policy.json" }}

[[grants]]
name = "bob"
token = "{BOB}"
policies = {{ enforced = "trial.json" }}
"""
    gw = start_gateway_config(procs, tmp_path, config, name="toolgate-shadow",
                              policies={"policy.json": POLICY, "trial.json": {**POLICY, "shadow": True}})

    def tags() -> list[str]:
        return ran.read_text().split() if ran.exists() else []

    async def enforced() -> None:
        async with http_client(gw.server_url("enforced"), ALICE) as client:
            assert "secret_admin" not in {t.name for t in (await client.list_tools()).tools}
            assert_denied(await client.call_tool("record_run", {"tag": "bad"}),
                          "/tools/record_run/deny_if/args.tag-eq", "no bad tags")
            for tag in ("e1", "e2"):
                assert_allowed(await client.call_tool("record_run", {"tag": tag}))
            assert_rate_limited(await client.call_tool("record_run", {"tag": "e3"}), "/tools/record_run/limits/runs",
                                "2", "day", "runs", DAY_MS)
            try:
                await client.call_tool("secret_admin", {})
                raise AssertionError("a hidden tool ran")
            except MCPError as e:
                assert_unknown_tool(e, "secret_admin")
            held = await client.call_tool("charge", {"amount": 5, "reason": "r"})
            assert held.is_error and "[APPROVAL REQUIRED]" in held.content[0].text, held

    async def shadowed(server: str, token: str, prefix: str) -> None:
        async with http_client(gw.server_url(server), token) as client:
            assert "secret_admin" in {t.name for t in (await client.list_tools()).tools}
            for tag in ("bad", f"{prefix}1", f"{prefix}2", f"{prefix}3"):
                assert_allowed(await client.call_tool("record_run", {"tag": tag}))
            assert_allowed(await client.call_tool("secret_admin", {}))
            assert_allowed(await client.call_tool("charge", {"amount": 5, "reason": "r"}))
            # A tool the upstream lacks is still unknown: shadow mode enforces nothing, and
            # the upstream's truth is not the policy's.
            try:
                await client.call_tool("no_such_tool", {})
                raise AssertionError("an absent tool was forwarded")
            except MCPError as e:
                assert_unknown_tool(e, "no_such_tool")

    run(enforced)
    assert tags() == ["e1", "e2"]
    run(lambda: shadowed("watched", ALICE, "w"))  # per server
    run(lambda: shadowed("enforced", BOB, "t"))  # per policy
    assert tags() == ["e1", "e2", "bad", "w1", "w2", "w3", "bad", "t1", "t2", "t3"]

    # A record is durable in the gateway's journal before its call is forwarded, and in the
    # database within ~20 ms: wait for the last ones (7 calls a shadow run, 6 enforced).
    deadline = time.monotonic() + 10
    while True:
        records = [r for r in audit_records(tmp_path / "toolgate-shadow-data") if r["method"] == "tools/call"]
        if len(records) >= 6 + 7 + 7 or time.monotonic() > deadline:
            break
        time.sleep(0.1)

    def seen(server: str, grant: str) -> list[tuple[Any, ...]]:
        return [(r["tool"], r["decision"], r["rule"], r["shadow"])
                for r in records if r["server"] == server and r["grant"] == grant]

    shadow_findings = [
        ("record_run", "deny", "/tools/record_run/deny_if/args.tag-eq", True),
        ("record_run", "allow", None, True),
        ("record_run", "allow", None, True),
        # The shadow limit counted w1 and w2 (not the denied call): it would refuse w3.
        ("record_run", "rate_limited", "/tools/record_run/limits/runs", True),
        ("secret_admin", "hide", "(hidden)", True),
        ("charge", "approval_required", "/tools/charge/action", True),
    ]
    normalize = [(t, d, r or None, s) for t, d, r, s in seen("watched", "alice")]
    assert normalize[:6] == shadow_findings, normalize
    normalize = [(t, d, r or None, s) for t, d, r, s in seen("enforced", "bob")]
    assert normalize[:6] == shadow_findings, normalize
    assert all(not s for *_, s in seen("enforced", "alice")), seen("enforced", "alice")

    # The shadow counters left the real budget alone: alice's limit on `enforced` stands
    # where her two enforced calls left it, and bob's real budget there is whole.
    async def budgets() -> None:
        async with http_client(gw.server_url("enforced"), ALICE) as client:
            assert_rate_limited(await client.call_tool("record_run", {"tag": "e4"}), "/tools/record_run/limits/runs",
                                "2", "day", "runs", DAY_MS)
    run(budgets)

    metrics = httpx.get(f"{gw.base}/metrics", timeout=10).text
    for line in ['toolgate_shadow_decisions_total{server="watched",decision="deny"} 1',
                 'toolgate_shadow_decisions_total{server="watched",decision="rate_limited"} 1',
                 'toolgate_shadow_decisions_total{server="watched",decision="hide"} 1',
                 'toolgate_shadow_decisions_total{server="watched",decision="approval_required"} 1']:
        assert line in metrics.splitlines(), (line, [m for m in metrics.splitlines() if "shadow" in m])
