#!/usr/bin/env python3
"""Conformance fixture: an MCP server that implements everything the server
scenarios of the official conformance suite (`@modelcontextprotocol/conformance`
0.1.x, `conformance server --suite all`) exercise.

Written with the official MCP Python SDK 2.x (`mcp.server.mcpserver.MCPServer`),
served over Streamable HTTP at `/mcp`:

    python fixture_server.py --port 0          # 0: pick a free port
    -> prints "READY http://127.0.0.1:<port>/mcp" on stdout once listening

It is the upstream for the gateway's conformance comparison
(tests/conformance/test_conformance.py): the suite is run against it directly
and through toolgate, and the verdicts must match.

What each scenario needs (names are fixed by the suite):

  tools      test_simple_text, test_image_content, test_audio_content,
             test_embedded_resource, test_multiple_content_types,
             test_tool_with_logging (3 info logs, ~50 ms apart),
             test_tool_with_progress (0/50/100 of 100), test_error_handling
             (isError result), test_sampling (sampling/createMessage),
             test_elicitation, test_elicitation_sep1034_defaults,
             test_elicitation_sep1330_enums (elicitation/create),
             json_schema_2020_12_tool ($schema/$defs/additionalProperties kept),
             test_reconnection (closes its POST SSE stream mid-call, SEP-1699)
  resources  test://static-text, test://static-binary, test://watched-resource,
             template test://template/{id}/data, resources/subscribe+unsubscribe
  prompts    test_simple_prompt, test_prompt_with_arguments(arg1, arg2),
             test_prompt_with_embedded_resource(resourceUri), test_prompt_with_image
  other      logging/setLevel, completion/complete, ping (built in),
             DNS-rebinding protection (Host/Origin must be loopback)
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import logging
import sys
import warnings
from pathlib import Path
from typing import Any

from mcp.server import ServerRequestContext
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.prompts.base import UserMessage
from mcp.server.mcpserver.tools import Tool
from mcp.server.streamable_http import EventCallback, EventMessage, EventStore
from mcp.server.transport_security import TransportSecuritySettings
from mcp.types import (
    AudioContent,
    CallToolResult,
    Completion,
    CompletionArgument,
    CompletionContext,
    EmbeddedResource,
    EmptyResult,
    ImageContent,
    JSONRPCMessage,
    PromptReference,
    ResourceTemplateReference,
    SamplingMessage,
    SetLevelRequestParams,
    SubscribeRequestParams,
    TextContent,
    TextResourceContents,
    UnsubscribeRequestParams,
)

TESTS = Path(__file__).resolve().parent.parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))  # tests/: the shared `support` package (also when run directly)

from support.asgi import serve_asgi  # noqa: E402

# Logging, sampling and roots are deprecated as of protocol 2026-07-28; the
# suite exercises the 2025-11-25 wire, where they are current. Keep stderr clean.
warnings.filterwarnings("ignore", message=r".*deprecated as of 2026-07-28.*")

log = logging.getLogger("conformance-fixture")

# 1x1 red PNG and a minimal (empty) PCM WAV.
PNG_1PX = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
WAV_EMPTY = base64.b64encode(
    b"RIFF"
    + (36).to_bytes(4, "little")
    + b"WAVEfmt "
    + (16).to_bytes(4, "little")
    + (1).to_bytes(2, "little")  # PCM
    + (1).to_bytes(2, "little")  # mono
    + (8000).to_bytes(4, "little")  # sample rate
    + (16000).to_bytes(4, "little")  # byte rate
    + (2).to_bytes(2, "little")  # block align
    + (16).to_bytes(2, "little")  # bits per sample
    + b"data"
    + (0).to_bytes(4, "little")
).decode()


class MemoryEventStore(EventStore):
    """Keeps every SSE event so that a client reconnecting with Last-Event-ID
    (SEP-1699 polling, and resumption through the gateway) gets the rest of its
    stream. Event ids are global sequence numbers; priming events (message None)
    are stored as cursors but never replayed."""

    def __init__(self) -> None:
        self._events: list[tuple[str, int, JSONRPCMessage | None]] = []
        self._seq = 0
        self._lock = asyncio.Lock()

    async def store_event(self, stream_id: str, message: JSONRPCMessage | None) -> str:
        async with self._lock:
            self._seq += 1
            self._events.append((stream_id, self._seq, message))
            return str(self._seq)

    async def replay_events_after(self, last_event_id: str, send_callback: EventCallback) -> str | None:
        try:
            after = int(last_event_id)
        except ValueError:
            return None
        async with self._lock:
            stream = next((sid for sid, seq, _ in self._events if seq == after), None)
            if stream is None:
                return None
            pending = [(seq, msg) for sid, seq, msg in self._events if sid == stream and seq > after]
        for seq, msg in pending:
            if msg is not None:
                await send_callback(EventMessage(msg, str(seq)))
        return stream


def build_server() -> MCPServer:
    # --- json_schema_2020_12_tool: a tool whose inputSchema is given verbatim.
    def json_schema_2020_12_tool(name: str | None = None, address: dict[str, Any] | None = None) -> str:
        """Tool with JSON Schema 2020-12 features"""
        return f"name={name!r}, address={json.dumps(address, sort_keys=True)}"

    schema_tool = Tool.from_function(
        json_schema_2020_12_tool,
        name="json_schema_2020_12_tool",
        description="Tool with JSON Schema 2020-12 features",
        structured_output=False,
    ).model_copy(
        update={
            "parameters": {
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "type": "object",
                "$defs": {
                    "address": {
                        "type": "object",
                        "properties": {"street": {"type": "string"}, "city": {"type": "string"}},
                    }
                },
                "properties": {"name": {"type": "string"}, "address": {"$ref": "#/$defs/address"}},
                "additionalProperties": False,
            }
        }
    )

    mcp = MCPServer(
        name="toolgate-conformance-fixture",
        version="1.0.0",
        instructions="Fixture server for the MCP conformance suite.",
        tools=[schema_tool],
        log_level="WARNING",
    )
    # Plain content results: no outputSchema/structuredContent on the fixture tools.
    tool = lambda: mcp.tool(structured_output=False)  # noqa: E731

    # ------------------------------------------------------------------ tools
    @tool()
    def test_simple_text() -> str:
        """Returns a simple text content block."""
        return "This is a simple text response for testing."

    @tool()
    def test_image_content() -> list[ImageContent]:
        """Returns an image content block (1x1 PNG)."""
        return [ImageContent(type="image", data=PNG_1PX, mime_type="image/png")]

    @tool()
    def test_audio_content() -> list[AudioContent]:
        """Returns an audio content block (WAV)."""
        return [AudioContent(type="audio", data=WAV_EMPTY, mime_type="audio/wav")]

    @tool()
    def test_embedded_resource() -> list[EmbeddedResource]:
        """Returns an embedded text resource."""
        return [
            EmbeddedResource(
                type="resource",
                resource=TextResourceContents(
                    uri="test://embedded-resource",
                    mime_type="text/plain",
                    text="This is an embedded resource content.",
                ),
            )
        ]

    @tool()
    def test_multiple_content_types() -> list[TextContent | ImageContent | EmbeddedResource]:
        """Returns text, image and embedded resource content together."""
        return [
            TextContent(type="text", text="Multiple content types test:"),
            ImageContent(type="image", data=PNG_1PX, mime_type="image/png"),
            EmbeddedResource(
                type="resource",
                resource=TextResourceContents(
                    uri="test://mixed-content-resource",
                    mime_type="application/json",
                    text=json.dumps({"test": "data", "value": 123}),
                ),
            ),
        ]

    @tool()
    async def test_tool_with_logging(ctx: Context) -> str:
        """Sends three info-level log notifications while it runs."""
        await ctx.log("info", "Tool execution started")
        await asyncio.sleep(0.05)
        await ctx.log("info", "Tool processing data")
        await asyncio.sleep(0.05)
        await ctx.log("info", "Tool execution completed")
        return "Tool with logging executed successfully"

    @tool()
    async def test_tool_with_progress(ctx: Context) -> str:
        """Reports progress 0, 50 and 100 of 100 (when the caller sent a progressToken)."""
        for step, progress in enumerate((0, 50, 100)):
            if step:
                await asyncio.sleep(0.05)
            await ctx.report_progress(progress=progress, total=100, message=f"Completed step {progress} of 100")
        return "Tool with progress executed successfully"

    @tool()
    def test_error_handling() -> CallToolResult:
        """Always fails: the result has isError true."""
        return CallToolResult(
            content=[TextContent(type="text", text="This tool intentionally returns an error for testing")],
            is_error=True,
        )

    @tool()
    async def test_sampling(prompt: str, ctx: Context) -> str:
        """Asks the client's LLM (sampling/createMessage) and returns its answer."""
        result = await ctx.session.create_message(
            messages=[SamplingMessage(role="user", content=TextContent(type="text", text=prompt))],
            max_tokens=100,
            related_request_id=ctx.request_id,
        )
        text = result.content.text if result.content.type == "text" else f"<{result.content.type}>"
        return f"LLM response: {text}"

    async def elicit(ctx: Context, message: str, schema: dict[str, Any]) -> str:
        result = await ctx.session.elicit_form(message, schema, related_request_id=ctx.request_id)
        return f"action={result.action}, content={json.dumps(result.content or {}, sort_keys=True)}"

    @tool()
    async def test_elicitation(message: str, ctx: Context) -> str:
        """Asks the user (elicitation/create) for a username and an email."""
        outcome = await elicit(
            ctx,
            message,
            {
                "type": "object",
                "properties": {
                    "username": {"type": "string", "description": "User's response"},
                    "email": {"type": "string", "description": "User's email address"},
                },
                "required": ["username", "email"],
            },
        )
        return f"User response: {outcome}"

    @tool()
    async def test_elicitation_sep1034_defaults(ctx: Context) -> str:
        """Elicitation whose schema has a default for every primitive type (SEP-1034)."""
        outcome = await elicit(
            ctx,
            "Please review and update the form fields with defaults",
            {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "description": "User name", "default": "John Doe"},
                    "age": {"type": "integer", "description": "User age", "default": 30},
                    "score": {"type": "number", "description": "User score", "default": 95.5},
                    "status": {
                        "type": "string",
                        "description": "User status",
                        "enum": ["active", "inactive", "pending"],
                        "default": "active",
                    },
                    "verified": {"type": "boolean", "description": "Verification status", "default": True},
                },
                "required": [],
            },
        )
        return f"Elicitation completed: {outcome}"

    @tool()
    async def test_elicitation_sep1330_enums(ctx: Context) -> str:
        """Elicitation whose schema uses all five enum shapes of SEP-1330."""
        outcome = await elicit(
            ctx,
            "Please select options from the enum fields",
            {
                "type": "object",
                "properties": {
                    "untitledSingle": {
                        "type": "string",
                        "description": "Untitled single-select",
                        "enum": ["option1", "option2", "option3"],
                    },
                    "titledSingle": {
                        "type": "string",
                        "description": "Titled single-select",
                        "oneOf": [
                            {"const": "value1", "title": "First Option"},
                            {"const": "value2", "title": "Second Option"},
                            {"const": "value3", "title": "Third Option"},
                        ],
                    },
                    "legacyEnum": {
                        "type": "string",
                        "description": "Legacy titled enum (enumNames)",
                        "enum": ["opt1", "opt2", "opt3"],
                        "enumNames": ["Option One", "Option Two", "Option Three"],
                    },
                    "untitledMulti": {
                        "type": "array",
                        "description": "Untitled multi-select",
                        "items": {"type": "string", "enum": ["option1", "option2", "option3"]},
                    },
                    "titledMulti": {
                        "type": "array",
                        "description": "Titled multi-select",
                        "items": {
                            "anyOf": [
                                {"const": "value1", "title": "First Choice"},
                                {"const": "value2", "title": "Second Choice"},
                                {"const": "value3", "title": "Third Choice"},
                            ]
                        },
                    },
                },
                "required": [],
            },
        )
        return f"Elicitation completed: {outcome}"

    @tool()
    async def test_reconnection(ctx: Context) -> str:
        """Closes its own SSE stream mid-call, then finishes (SEP-1699 polling).

        The SDK only offers the close for clients at protocol >= 2025-11-25 (older
        clients get no priming event and could not resume); otherwise this is a no-op
        and the result arrives on the original stream."""
        await ctx.log("info", "Before disconnect")
        await ctx.close_sse_stream()
        await asyncio.sleep(0.2)
        await ctx.log("info", "After reconnect")
        return "Reconnection test completed"

    # -------------------------------------------------------------- resources
    @mcp.resource("test://static-text", name="static-text", description="A static text resource", mime_type="text/plain")
    def static_text() -> str:
        return "This is the content of the static text resource."

    @mcp.resource(
        "test://static-binary", name="static-binary", description="A static binary resource", mime_type="image/png"
    )
    def static_binary() -> bytes:
        return base64.b64decode(PNG_1PX)

    @mcp.resource(
        "test://watched-resource",
        name="watched-resource",
        description="A resource clients may subscribe to",
        mime_type="text/plain",
    )
    def watched_resource() -> str:
        return "Watched resource content"

    @mcp.resource(
        "test://template/{id}/data",
        name="template-data",
        description="A resource template with parameter substitution",
        mime_type="application/json",
    )
    def template_data(id: str) -> str:
        return json.dumps({"id": id, "templateTest": True, "data": f"Data for ID: {id}"})

    # ---------------------------------------------------------------- prompts
    @mcp.prompt(description="A simple prompt without arguments")
    def test_simple_prompt() -> list[UserMessage]:
        return [UserMessage("This is a simple prompt for testing.")]

    @mcp.prompt(description="A prompt with required arguments")
    def test_prompt_with_arguments(arg1: str, arg2: str) -> list[UserMessage]:
        return [UserMessage(f"Prompt with arguments: arg1='{arg1}', arg2='{arg2}'")]

    @mcp.prompt(description="A prompt with an embedded resource")
    def test_prompt_with_embedded_resource(resourceUri: str) -> list[UserMessage]:  # noqa: N803 (wire name)
        return [
            UserMessage(
                EmbeddedResource(
                    type="resource",
                    resource=TextResourceContents(
                        uri=resourceUri, mime_type="text/plain", text="Embedded resource content for testing."
                    ),
                )
            ),
            UserMessage("Please process the embedded resource above."),
        ]

    @mcp.prompt(description="A prompt with image content")
    def test_prompt_with_image() -> list[UserMessage]:
        return [
            UserMessage(ImageContent(type="image", data=PNG_1PX, mime_type="image/png")),
            UserMessage("Please analyze the image above."),
        ]

    # ------------------------------------------------------------- completion
    @mcp.completion()
    async def complete(
        ref: PromptReference | ResourceTemplateReference,
        argument: CompletionArgument,
        context: CompletionContext | None,
    ) -> Completion:
        candidates: list[str] = []
        if isinstance(ref, PromptReference) and ref.name == "test_prompt_with_arguments":
            candidates = ["paris", "park", "party", "test", "testValue1", "testValue2"]
        elif isinstance(ref, ResourceTemplateReference):
            candidates = ["1", "42", "123"]
        values = [c for c in candidates if c.startswith(argument.value)]
        return Completion(values=values, total=len(values), has_more=False)

    # ------------------------------------- logging/setLevel, resources/subscribe
    # MCPServer has no public hook for these 2025-era methods yet (SDK 2.3.0), so
    # they are registered on the low-level server; registering them is also what
    # advertises the `logging` and `resources.subscribe` capabilities.
    subscriptions: set[str] = set()

    async def set_level(ctx: ServerRequestContext, params: SetLevelRequestParams) -> EmptyResult:
        log.info("logging level set to %s", params.level)
        return EmptyResult()

    async def subscribe(ctx: ServerRequestContext, params: SubscribeRequestParams) -> EmptyResult:
        subscriptions.add(str(params.uri))
        return EmptyResult()

    async def unsubscribe(ctx: ServerRequestContext, params: UnsubscribeRequestParams) -> EmptyResult:
        subscriptions.discard(str(params.uri))
        return EmptyResult()

    lowlevel = mcp._lowlevel_server  # noqa: SLF001
    lowlevel.add_request_handler("logging/setLevel", SetLevelRequestParams, set_level)
    lowlevel.add_request_handler("resources/subscribe", SubscribeRequestParams, subscribe)
    lowlevel.add_request_handler("resources/unsubscribe", UnsubscribeRequestParams, unsubscribe)

    return mcp


def build_app(mcp: MCPServer):
    return mcp.streamable_http_app(
        streamable_http_path="/mcp",
        event_store=MemoryEventStore(),
        retry_interval=100,  # ms, sent in SSE priming events
        # DNS-rebinding protection: only loopback Host/Origin values, any port.
        transport_security=TransportSecuritySettings(
            enable_dns_rebinding_protection=True,
            allowed_hosts=["127.0.0.1:*", "localhost:*", "[::1]:*"],
            allowed_origins=["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"],
        ),
    )


async def serve(host: str, port: int) -> None:
    await serve_asgi(build_app(build_server()), host, port, "/mcp", name="fixture server")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="TCP port (0: any free port; default 0)")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        asyncio.run(serve(args.host, args.port))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
