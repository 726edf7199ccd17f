#!/usr/bin/env python3
"""A tiny header-injecting HTTP forward proxy for the conformance run.

The MCP conformance CLI (`conformance server --url ...`, 0.1.x) has no option to
send custom headers or a bearer token, but the gateway wants
`Authorization: Bearer <grant token>`. This proxy sits in front of the target:

    python auth_proxy.py --target http://127.0.0.1:8080/mcp/default --port 0 \\
        --bearer TOKEN            # or $AUTH_PROXY_BEARER; --header 'Name: value' (repeatable)
    -> prints "READY http://127.0.0.1:<port>/mcp/default" once listening

Every request (any method, any path) is forwarded to the target's origin with the
same path and query. Headers pass through as received -- Host, Origin,
Mcp-Session-Id, Mcp-Protocol-Version, Last-Event-ID, Accept, ... -- except the
hop-by-hop ones; the injected headers replace any of the same name. Response
status and headers come back unchanged and the body is streamed chunk by chunk
as it arrives (JSON and SSE alike, no buffering). A client disconnect closes the
upstream response, so an abandoned SSE stream does not linger upstream.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from urllib.parse import urlsplit

import anyio
import httpx

TESTS = Path(__file__).resolve().parent.parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))  # tests/: the shared `support` package (also when run directly)

from support.asgi import serve_asgi  # noqa: E402

HOP_BY_HOP = {
    b"connection",
    b"keep-alive",
    b"proxy-connection",
    b"proxy-authenticate",
    b"proxy-authorization",
    b"te",
    b"trailer",
    b"transfer-encoding",
    b"upgrade",
}
MAX_BODY = 16 * 1024 * 1024


def _hop_headers(headers: list[tuple[bytes, bytes]]) -> set[bytes]:
    names = set(HOP_BY_HOP)
    for k, v in headers:
        if k.lower() == b"connection":
            names |= {t.strip().lower() for t in v.split(b",") if t.strip()}
    return names


class Proxy:
    def __init__(self, targets: list[str], inject: list[tuple[str, str]]):
        self.origins = []
        for target in targets:
            parts = urlsplit(target)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError(f"--target must be an http(s) URL, got {target!r}")
            self.origins.append(f"{parts.scheme}://{parts.netloc}")
        self.turn = 0
        self.inject = [(k.strip().lower().encode("latin-1"), v.strip().encode("latin-1")) for k, v in inject]
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(connect=10.0, read=None, write=30.0, pool=10.0),
            follow_redirects=False,
            trust_env=False,
        )

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    await self.client.aclose()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return

        # Request body (small JSON-RPC messages): read it whole, bounded.
        body = bytearray()
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            body += msg.get("body", b"")
            if len(body) > MAX_BODY:
                await _plain(send, 413, b"request body too large for auth_proxy")
                return
            if not msg.get("more_body"):
                break

        raw_headers: list[tuple[bytes, bytes]] = list(scope["headers"])
        drop = _hop_headers(raw_headers) | {b"content-length"} | {k for k, _ in self.inject}
        headers = [(k, v) for k, v in raw_headers if k.lower() not in drop] + self.inject
        sent_names = {k.lower() for k, _ in headers}

        path = scope.get("raw_path") or scope["path"].encode()
        # Several targets (replicas): each request goes to the next one in turn.
        origin = self.origins[self.turn % len(self.origins)]
        self.turn += 1
        url = origin + path.decode("latin-1")
        if scope.get("query_string"):
            url += "?" + scope["query_string"].decode("latin-1")

        request = self.client.build_request(scope["method"], url, headers=headers, content=bytes(body))
        # httpx adds defaults (Accept, Accept-Encoding, User-Agent); forward only what the client sent.
        for name in ("accept", "accept-encoding", "user-agent"):
            if name.encode() not in sent_names and name in request.headers:
                del request.headers[name]

        try:
            upstream = await self.client.send(request, stream=True)
        except httpx.HTTPError as exc:
            await _plain(send, 502, f"auth_proxy: upstream {origin} unreachable: {exc!r}".encode())
            return

        try:
            resp_raw = list(upstream.headers.raw)
            resp_drop = _hop_headers(resp_raw)
            await send(
                {
                    "type": "http.response.start",
                    "status": upstream.status_code,
                    "headers": [(k.lower(), v) for k, v in resp_raw if k.lower() not in resp_drop],
                }
            )

            async with anyio.create_task_group() as tg:

                async def watch_disconnect() -> None:
                    while True:
                        if (await receive())["type"] == "http.disconnect":
                            tg.cancel_scope.cancel()
                            return

                tg.start_soon(watch_disconnect)
                try:
                    async for chunk in upstream.aiter_raw():
                        if chunk:
                            await send({"type": "http.response.body", "body": chunk, "more_body": True})
                except httpx.HTTPError:
                    pass  # upstream closed mid-stream: end ours too
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                tg.cancel_scope.cancel()
        except OSError:
            pass  # the client went away
        finally:
            await upstream.aclose()


async def _plain(send, status: int, text: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(text)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": text})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Header-injecting streaming forward proxy (for the conformance run).")
    p.add_argument("--target", required=True, action="append",
                   help="URL to forward to; its origin receives every request (repeated: replicas with the same "
                        "paths, each request to the next in turn)")
    p.add_argument("--port", type=int, default=0, help="listen port (0: any free port)")
    p.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    p.add_argument("--header", action="append", default=[], metavar="'NAME: VALUE'", help="header to add (repeatable)")
    p.add_argument("--bearer", default=os.environ.get("AUTH_PROXY_BEARER"),
                   help="add Authorization: Bearer TOKEN (default: $AUTH_PROXY_BEARER)")
    args = p.parse_args(argv)

    inject: list[tuple[str, str]] = []
    for h in args.header:
        name, sep, value = h.partition(":")
        if not sep or not name.strip():
            p.error(f"--header wants 'NAME: VALUE', got {h!r}")
        inject.append((name, value))
    if args.bearer:
        inject.append(("Authorization", f"Bearer {args.bearer}"))
    try:
        app = Proxy(args.target, inject)
    except ValueError as exc:
        p.error(str(exc))
    first = urlsplit(args.target[0])
    target_path = first.path or "/"
    if first.query:
        target_path += "?" + first.query
    try:
        asyncio.run(serve_asgi(app, args.host, args.port, target_path, name="auth_proxy",
                               server_header=False, date_header=False))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
