"""Policy enforcement end to end: the official Python SDK client → toolgate (quick mode) →
py_upstream.py, over Streamable HTTP (SSE answers and `--json-response` answers) and over
stdio. py_upstream paginates tools/list (`--page-size 7`).

Asserts SPEC §3.4 rule ids and §4 answers: allowed calls get the upstream's exact result;
denials are `isError` results `[POLICY DENIED] <message>` with `_meta["toolgate/decision"]`;
hidden tools and tools the upstream lacks are JSON-RPC -32602 `Unknown tool: <name>`;
tools/list is filtered with pagination and the upstream's response mode preserved.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from mcp import Client, MCPError

from e2e_helpers import (
    Gateway,
    Procs,
    RawSession,
    assert_allowed,
    assert_denied,
    assert_unknown_tool,
    http_client,
    list_all_tools,
    py_upstream_stdio_argv,
    run,
    start_gateway_quick,
    start_py_upstream_http,
    started_lazily,
    stdio_client,
)

PAGE_SIZE = "7"

POLICY: dict[str, Any] = {
    "version": "1",
    "default": "deny",
    "hide": ["filler_1*", "secret_admin"],
    "all_tools": {
        "deny_if": [{"path": "args.text", "op": "contains", "value": "FORBIDDEN"}],
    },
    "tools": {
        "echo": {
            "schema": {
                "type": "object",
                "properties": {"text": {"type": "string", "maxLength": 20}},
                "required": ["text"],
            }
        },
        "add": {},
        "filler_0*": {},
        "secret_admin": {},  # listed, but hidden: hiding wins
        "ghost_tool": {},  # allowed by the policy, absent upstream
        "delete_everything": {"action": "deny"},
        "charge": {
            "on_deny": "Charges need a reason.",
            "require": [{"path": "args.reason", "op": "exists", "value": True}],
            "deny_if": [
                {"path": "args.amount", "op": "gt", "value": 100, "on_deny": "Charges over 100 need a human."},
                {
                    "conditions": [
                        {"path": "args.amount", "op": "gte", "value": 50},
                        {"path": "args.reason", "op": "eq", "value": "gift"},
                    ],
                    "on_deny": "No big gifts.",
                },
            ],
        },
    },
}

HIDDEN = {f"filler_1{i}" for i in range(10)} | {"secret_admin"}
VARIANTS = ["http-sse", "http-json", "stdio"]


class Stack:
    """py_upstream + gateway for one variant, plus a way to reach the upstream directly."""

    def __init__(self, variant: str, procs: Procs, workdir: Path):
        self.variant = variant
        self.upstream_url: str | None = None
        if variant == "stdio":
            self.stdio_argv = py_upstream_stdio_argv("--page-size", PAGE_SIZE)
            self.gateway: Gateway = start_gateway_quick(procs, workdir, POLICY, command=self.stdio_argv,
                                                        name=f"toolgate-{variant}")
        else:
            extra = ["--page-size", PAGE_SIZE] + (["--json-response"] if variant == "http-json" else [])
            self.upstream_url, _ = start_py_upstream_http(procs, *extra, name=f"py_upstream-{variant}")
            self.gateway = start_gateway_quick(procs, workdir, POLICY, upstream=self.upstream_url,
                                               name=f"toolgate-{variant}")

    def via_gateway(self, **kwargs: Any) -> contextlib.AbstractAsyncContextManager[Client]:
        return http_client(self.gateway.url, self.gateway.token, **kwargs)

    def direct(self) -> contextlib.AbstractAsyncContextManager[Client]:
        """A connection to a py_upstream without the gateway (for reference answers)."""
        if self.upstream_url:
            return http_client(self.upstream_url, None)
        return stdio_client(self.stdio_argv)


@pytest.fixture(scope="module")
def stacks(module_procs: Procs, module_tmp: Path) -> Callable[[str], Stack]:
    """Started lazily from the test body, so that a missing binary or a process that does
    not start is a test failure (not a fixture error)."""
    return started_lazily(lambda variant: Stack(variant, module_procs, module_tmp / variant))


def dump(result: Any) -> dict[str, Any]:
    return result.model_dump(by_alias=True, exclude_none=True)


@pytest.mark.parametrize("variant", VARIANTS)
def test_allowed_calls_return_the_upstream_result(stacks: Callable[[str], Stack], variant: str) -> None:
    stack = stacks(variant)
    calls = [("echo", {"text": "hello, world"}), ("add", {"a": 2, "b": 3.5}), ("filler_03", {})]

    async def body() -> None:
        async with stack.direct() as direct:
            expected = [await direct.call_tool(name, args) for name, args in calls]
        async with stack.via_gateway() as client:
            for (name, args), want in zip(calls, expected):
                got = await client.call_tool(name, args)
                assert_allowed(got)
                assert [c.model_dump() for c in got.content] == [c.model_dump() for c in want.content], name
                assert got.structured_content == want.structured_content, name
                assert got.is_error == want.is_error
            add = await client.call_tool("add", {"a": 2, "b": 3.5})
            assert add.structured_content == {"sum": 5.5}
            assert add.content[0].text == '{\n  "sum": 5.5\n}'

            # A charge that passes require and both deny_if predicates (the group needs both
            # conditions; here only one holds).
            charge = await client.call_tool("charge", {"amount": 10, "reason": "gift"})
            assert_allowed(charge)
            assert charge.structured_content is not None
            assert charge.structured_content["charged"] == 10
            assert charge.structured_content["reason"] == "gift"
            assert charge.structured_content["charge_id"].startswith("ch_")

    run(body)


# (tool, arguments, rule, message)
DENIALS: list[tuple[str, dict[str, Any], str, str]] = [
    ("sleep", {"seconds": 0}, "(default deny)", 'Tool "sleep" is not permitted by policy'),
    ("filler_25", {}, "(default deny)", 'Tool "filler_25" is not permitted by policy'),
    ("delete_everything", {}, "/tools/delete_everything/action", 'Tool "delete_everything" is denied by policy'),
    # require fails (no reason): the tool's on_deny is the message
    ("charge", {"amount": 5}, "/tools/charge/require/args.reason-exists", "Charges need a reason."),
    # require is checked before deny_if
    ("charge", {"amount": 500}, "/tools/charge/require/args.reason-exists", "Charges need a reason."),
    # present but null does not "exist"
    ("charge", {"amount": 5, "reason": None}, "/tools/charge/require/args.reason-exists", "Charges need a reason."),
    ("charge", {"amount": 150, "reason": "laptop"}, "/tools/charge/deny_if/args.amount-gt",
     "Charges over 100 need a human."),
    ("charge", {"amount": 60, "reason": "gift"}, "/tools/charge/deny_if/1", "No big gifts."),
    # schema (before predicates): the validator's message names the failing pointer
    ("echo", {"text": "x" * 21}, "/tools/echo/schema", None),  # type: ignore[list-item]
    ("echo", {"text": "x" * 21 + "FORBIDDEN"}, "/tools/echo/schema", None),  # type: ignore[list-item]
    # all_tools predicates, default message
    ("echo", {"text": "FORBIDDEN word"}, "/all_tools/deny_if/args.text-contains",
     'Denied by rule "/all_tools/deny_if/args.text-contains"'),
    ("add", {"a": 1, "b": 2, "text": "FORBIDDEN"}, "/all_tools/deny_if/args.text-contains",
     'Denied by rule "/all_tools/deny_if/args.text-contains"'),
]


@pytest.mark.parametrize("variant", VARIANTS)
def test_denials_carry_the_decision(stacks: Callable[[str], Stack], variant: str) -> None:
    stack = stacks(variant)

    async def body() -> None:
        async with stack.via_gateway() as client:
            for tool, args, rule, message in DENIALS:
                result = await client.call_tool(tool, args)
                if message is None:  # schema: message from the validator
                    decision = (result.meta or {}).get("toolgate/decision") or {}
                    message = decision.get("message", "")
                    assert "/text" in message and "20" in message, f"{tool} {args}: {dump(result)}"
                assert_denied(result, rule, message)
            # The gateway still forwards allowed calls after all these denials.
            assert_allowed(await client.call_tool("echo", {"text": "still here"}))

    run(body)


@pytest.mark.parametrize("variant", VARIANTS)
def test_hidden_and_missing_tools_are_unknown(stacks: Callable[[str], Stack], variant: str) -> None:
    stack = stacks(variant)

    async def body() -> None:
        async with stack.via_gateway() as client:
            names, _ = await list_all_tools(client)
            for name in ["filler_10", "filler_19", "secret_admin", "ghost_tool", "no_such_tool"]:
                assert name not in names
                with pytest.raises(MCPError) as info:
                    await client.call_tool(name, {})
                assert_unknown_tool(info.value, name)
            # the session is still usable
            assert_allowed(await client.call_tool("filler_00", {}))

    run(body)


@pytest.mark.parametrize("variant", VARIANTS)
def test_tools_list_is_filtered_across_pages(stacks: Callable[[str], Stack], variant: str) -> None:
    stack = stacks(variant)

    async def body() -> None:
        async with stack.direct() as direct:
            upstream_names, upstream_pages = await list_all_tools(direct)
        assert upstream_pages > 5, "the fixture should paginate tools/list"
        assert HIDDEN <= set(upstream_names)
        expected = [n for n in upstream_names if n not in HIDDEN]
        async with stack.via_gateway() as client:
            first = await client.list_tools()
            assert first.next_cursor, "pagination must be preserved through the gateway"
            names, pages = await list_all_tools(client)
        assert pages > 1
        assert names == expected, (
            f"walking every page through the gateway must yield exactly the non-hidden tools, in order;\n"
            f"missing {sorted(set(expected) - set(names))}, extra {sorted(set(names) - set(expected))}, "
            f"duplicates {sorted({n for n in names if names.count(n) > 1})}")
        # denied-but-not-hidden tools stay listed
        assert {"delete_everything", "sleep", "filler_25", "charge"} <= set(names)

    run(body)


@pytest.mark.parametrize("variant", ["http-sse", "http-json"])
def test_tools_list_keeps_the_upstream_response_mode(stacks: Callable[[str], Stack], variant: str) -> None:
    """JSON stays JSON, SSE stays SSE (raw HTTP, both directly and through the gateway)."""
    stack = stacks(variant)
    want = "application/json" if variant == "http-json" else "text/event-stream"
    direct = RawSession(stack.upstream_url, None)  # type: ignore[arg-type]
    via = RawSession(stack.gateway.url, stack.gateway.token)  # type: ignore[arg-type]
    try:
        direct.initialize()
        via.initialize()
        cursor = None
        for page in range(20):
            params = {"cursor": cursor} if cursor else {}
            d_resp, d_msg = direct.request("tools/list", params)
            assert d_resp.headers["content-type"].startswith(want), "fixture does not answer as expected"
            g_resp, g_msg = via.request("tools/list", params)
            assert g_resp.status_code == 200, g_resp.text
            assert g_resp.headers["content-type"].startswith(want), (
                f"page {page}: upstream answered {want}, gateway {g_resp.headers['content-type']}")
            d_names = [t["name"] for t in d_msg["result"]["tools"]]
            g_names = [t["name"] for t in g_msg["result"]["tools"]]
            assert g_names == [n for n in d_names if n not in HIDDEN], f"page {page}"
            assert bool(g_msg["result"].get("nextCursor")) == bool(d_msg["result"].get("nextCursor")), f"page {page}"
            cursor = g_msg["result"].get("nextCursor")
            if not cursor:
                break
        assert page > 1, "several pages expected"
        # an allowed call keeps the mode too
        d_resp, d_msg = direct.request("tools/call", {"name": "echo", "arguments": {"text": "mode"}})
        g_resp, g_msg = via.request("tools/call", {"name": "echo", "arguments": {"text": "mode"}})
        assert d_resp.headers["content-type"].startswith(want)
        assert g_resp.headers["content-type"].startswith(want), g_resp.headers["content-type"]
        assert g_msg["result"] == d_msg["result"]
    finally:
        direct.close()
        via.close()
