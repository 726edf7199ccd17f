"""Serving an ASGI app from the standalone test servers (tests/conformance/fixture_server.py,
tests/conformance/auth_proxy.py): uvicorn on a socket bound here, then the `READY <url>`
line that the harnesses (support.procs.ready_url) wait for.

Importable as `support.asgi` once `tests/` is on sys.path (the scripts put it there
themselves, so that they also work when run directly).
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import uvicorn


async def serve_asgi(app: Any, host: str, port: int, path: str, *, name: str, **config: Any) -> None:
    """Serve `app` on host:port (port 0: any free port) until the server stops; once it
    accepts connections, print `READY http://HOST:PORT<path>` on stdout. `config`: more
    uvicorn.Config options. A startup failure is re-raised (or ends `name` with SystemExit)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.setblocking(False)
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=2, **config)
    )
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            await task  # re-raise the startup failure
            raise SystemExit(f"{name} stopped during startup")
        await asyncio.sleep(0.02)
    url_host = f"[{host}]" if ":" in host else host
    print(f"READY http://{url_host}:{sock.getsockname()[1]}{path}", flush=True)
    await task
