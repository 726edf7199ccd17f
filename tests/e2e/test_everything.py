"""The official Python SDK client → toolgate → `@modelcontextprotocol/server-everything`
(the MCP reference server, TypeScript SDK), over stdio and over Streamable HTTP.

Asserts: an allowed tool answers unchanged, a denied tool is refused with its rule, a hidden
tool is absent from tools/list and unknown at call time, progress notifications of a long
running operation reach the client's progress callback before the result, and the
server's elicitation and sampling requests are relayed to the client's callbacks with the
answers coming back into the tool result.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import MCPError

from e2e_helpers import (
    ClientCallbacks,
    Gateway,
    Procs,
    assert_allowed,
    assert_denied,
    assert_unknown_tool,
    call_tool_once,
    everything_command,
    http_client,
    list_all_tools,
    quick_gateways,
    run,
    start_everything_http,
)

POLICY: dict[str, Any] = {
    "version": "1",
    "default": "deny",
    "hide": ["get-env", "gzip-*"],
    "tools": {
        "echo": {},
        "get-env": {},  # hidden all the same
        "get-sum": {"action": "deny"},
        "trigger-long-running-operation": {},
        "trigger-elicitation-request": {},
        "trigger-sampling-request": {},
    },
}

TRANSPORTS = ["stdio", "http"]


@pytest.fixture(scope="module")
def gateways(module_procs: Procs, module_tmp: Path) -> Callable[[str], Gateway]:
    return quick_gateways(module_procs, module_tmp, POLICY, stdio_command=lambda: everything_command("stdio"),
                          http_upstream=lambda: start_everything_http(module_procs), name="toolgate-everything")


def recorder() -> ClientCallbacks:
    """Client callbacks that record what reached them."""
    return ClientCallbacks(
        elicit_content={"name": "Ada Lovelace", "check": True, "email": "ada@example.com", "integer": 7},
        sampling_model="e2e-fake-model", sampling_text="sampled: 42 is the answer")


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_everything_policy(gateways: Callable[[str], Gateway], transport: str) -> None:
    gw = gateways(transport)
    rec = recorder()

    async def body() -> None:
        async with http_client(gw.url, gw.token, **rec.kwargs()) as client:
            assert client.server_info is not None and client.server_info.name == "mcp-servers/everything"
            names, _ = await list_all_tools(client)
            for present in ["echo", "get-sum", "get-tiny-image", "trigger-long-running-operation",
                            "trigger-elicitation-request", "trigger-sampling-request"]:
                assert present in names, f"{present} missing from {names}"
            for hidden in ["get-env", "gzip-file-as-resource"]:
                assert hidden not in names

            echo = await client.call_tool("echo", {"message": "hello through toolgate"})
            assert_allowed(echo)
            assert [c.model_dump(exclude_none=True) for c in echo.content] == [
                {"type": "text", "text": "Echo: hello through toolgate"}]

            assert_denied(await client.call_tool("get-sum", {"a": 1, "b": 2}),
                          "/tools/get-sum/action", 'Tool "get-sum" is denied by policy')
            assert_denied(await client.call_tool("get-tiny-image", {}),
                          "(default deny)", 'Tool "get-tiny-image" is not permitted by policy')
            for hidden in ["get-env", "gzip-file-as-resource"]:
                with pytest.raises(MCPError) as info:
                    await client.call_tool(hidden, {})
                assert_unknown_tool(info.value, hidden)

    run(body)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_everything_progress_streams_before_the_result(gateways: Callable[[str], Gateway], transport: str) -> None:
    gw = gateways(transport)
    events: list[tuple[str, Any]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        events.append(("progress", (progress, total, anyio.current_time())))

    async def body() -> None:
        async with http_client(gw.url, gw.token) as client:
            started = anyio.current_time()
            result = await client.call_tool("trigger-long-running-operation", {"duration": 1.5, "steps": 5},
                                            progress_callback=on_progress)
            events.append(("result", anyio.current_time()))
            assert_allowed(result)
            assert result.content[0].text == "Long running operation completed. Duration: 1.5 seconds, Steps: 5."
            progress = [e[1] for e in events if e[0] == "progress"]
            assert [p[0] for p in progress] == [1, 2, 3, 4, 5], events
            assert all(p[1] == 5 for p in progress), events
            assert events[-1][0] == "result"
            # streamed as they happen, not buffered until the end: the first arrived well
            # before the call finished (steps are 0.3 s apart)
            assert progress[0][2] - started < events[-1][1] - started - 0.6, events

    run(body)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_everything_elicitation_is_relayed(gateways: Callable[[str], Gateway], transport: str) -> None:
    rec = recorder()
    result = call_tool_once(gateways(transport), "trigger-elicitation-request", {}, rec)
    assert_allowed(result)
    assert len(rec.elicitations) == 1
    params = rec.elicitations[0]
    assert params.message == "Please provide inputs for the following fields:"
    schema = params.model_dump(by_alias=True)["requestedSchema"]
    assert "name" in schema["properties"] and schema["required"] == ["name"]
    texts = [c.text for c in result.content if c.type == "text"]
    assert texts[0] == "✅ User provided the requested information!", texts
    assert "- Name: Ada Lovelace" in texts[1] and "- Email: ada@example.com" in texts[1], texts
    raw = json.loads(texts[2].split("Raw result:", 1)[1])
    assert raw["action"] == "accept"
    assert raw["content"] == {"name": "Ada Lovelace", "check": True, "email": "ada@example.com", "integer": 7}


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_everything_sampling_is_relayed(gateways: Callable[[str], Gateway], transport: str) -> None:
    rec = recorder()
    result = call_tool_once(gateways(transport), "trigger-sampling-request",
                            {"prompt": "what is six times seven?", "maxTokens": 50}, rec)
    assert_allowed(result)
    assert len(rec.samplings) == 1
    params = rec.samplings[0]
    assert params.max_tokens == 50
    assert params.system_prompt == "You are a helpful test server."
    content = params.messages[0].content
    assert content.type == "text"
    assert content.text == "Resource trigger-sampling-request context: what is six times seven?"
    text = result.content[0].text
    assert text.startswith("LLM sampling result: \n"), text
    sampled = json.loads(text.split("\n", 1)[1])
    assert sampled["model"] == "e2e-fake-model"
    assert sampled["content"] == {"type": "text", "text": "sampled: 42 is the answer"}
