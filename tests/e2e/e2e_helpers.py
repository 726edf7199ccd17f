"""Shared helpers for toolgate's end-to-end tests: the gateway, upstreams, SDK clients,
raw HTTP sessions and SSE streams, and assertions on policy decisions.

Processes come from tests/support/procs.py (shared with tests/conformance): each runs in
its own process group with stdout/stderr going to files (no pipe can fill up) and is
registered with a `Procs` registry, whose `stop_all()` (called by the fixtures'
finalizers) kills the whole group. Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import anyio
import httpx
import httpx2
import mcp.types as types
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.context import ClientRequestContext
from mcp.client.streamable_http import streamable_http_client

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
if str(REPO / "tests") not in sys.path:
    sys.path.insert(0, str(REPO / "tests"))

from support.procs import (  # noqa: E402  (also used by the tests through this module)
    STARTUP_TIMEOUT,
    Proc,
    Procs,
    cargo_binary,
    free_port,
    quick_announcement,
    ready_url,
    wait_tcp,
)

FIXTURES = REPO / "tests" / "fixtures"
PY_UPSTREAM = FIXTURES / "py_upstream.py"
HEADER_RECORDER = FIXTURES / "header_recorder.py"
ATTACK_SERVER = FIXTURES / "attack_server.py"
EXAMPLES = REPO / "examples"

PYTHON = os.environ.get("TOOLGATE_PYTHON") or sys.executable
NODE_MODULES = Path(os.environ.get("TOOLGATE_NODE_MODULES", "/root/.cache/toolgate-ci/node/node_modules"))

PROTOCOL_VERSION = "2025-11-25"

T = TypeVar("T")


# ------------------------------------------------------------------ binaries
def gateway_binary() -> Path:
    return cargo_binary("toolgate", "TOOLGATE_BIN", "toolgate", "the end-to-end tests")


def audit_records(data_dir: Path, *extra: str) -> list[dict[str, Any]]:
    """`toolgate audit query --json --data-dir DATA_DIR [EXTRA…]`, one dict per record (with
    `--admin`: the admin stream)."""
    done = subprocess.run([str(gateway_binary()), "audit", "query", "--json", "--data-dir", str(data_dir), *extra],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


def sendit_binary() -> Path:
    return cargo_binary("sendit-example", "SENDIT_BIN", "sendit-example", "the end-to-end tests")


def everything_command(transport: str) -> list[str]:
    """`mcp-server-everything <transport>` from the CI node_modules, run with node."""
    script = NODE_MODULES / "@modelcontextprotocol" / "server-everything" / "dist" / "index.js"
    if not script.is_file():
        pytest.fail(f"@modelcontextprotocol/server-everything not found at {script} "
                    "(set TOOLGATE_NODE_MODULES, or run .ci/setup)")
    node = os.environ.get("TOOLGATE_NODE") or _which("node")
    if not node:
        pytest.fail("node is not on PATH (source /root/.cache/toolgate-ci/env.sh)")
    return [node, str(script), transport]


def _which(name: str) -> str | None:
    candidates = [NODE_MODULES / ".bin" / name] + [Path(p) / name for p in os.environ.get("PATH", "").split(os.pathsep) if p]
    for cand in candidates:
        if cand.is_file() and os.access(cand, os.X_OK):
            return str(cand)
    return None


# ----------------------------------------------------------------- upstreams
def start_py_upstream_http(procs: Procs, *extra: str, name: str = "py_upstream",
                           ran_file: Path | None = None) -> tuple[str, Proc]:
    """py_upstream.py over Streamable HTTP on a free port; returns (its /mcp URL, proc).
    With `ran_file`, its `record_run` tool appends there (PY_UPSTREAM_RAN_FILE)."""
    env = {"PY_UPSTREAM_RAN_FILE": str(ran_file)} if ran_file else None
    proc = procs.start(name, [PYTHON, str(PY_UPSTREAM), "--transport", "http", "--port", "0", *extra], env=env)
    url = proc.wait_for(ready_url)
    return url, proc


def py_upstream_stdio_argv(*extra: str) -> list[str]:
    return [PYTHON, str(PY_UPSTREAM), "--transport", "stdio", *extra]


def start_header_recorder(procs: Procs, record: Path, *extra: str, name: str = "header_recorder") -> str:
    proc = procs.start(name, [PYTHON, str(HEADER_RECORDER), "--record", str(record), "--port", "0", *extra])
    return proc.wait_for(ready_url)


def start_attack_server(procs: Procs, role: str, *extra: str, name: str | None = None) -> str:
    """attack_server.py (a hostile MCP server, `role` evil or mail) over Streamable HTTP on
    a free port; returns its /mcp URL."""
    proc = procs.start(name or f"attack_{role}", [PYTHON, str(ATTACK_SERVER), "--role", role, "--port", "0", *extra])
    return proc.wait_for(ready_url)


def start_redis(procs: Procs, port: int | None = None, name: str = "redis",
                persist_dir: Path | None = None) -> tuple[str, Proc]:
    """A private, throw-away redis-server on `port` (default: a free one), managed by
    `procs`; returns (its redis:// URL, proc). Start it again on the same port to simulate a
    Redis that comes back: empty, or with `persist_dir` (append-only file, fsync on every
    write) holding what it had."""
    binary = os.environ.get("TOOLGATE_REDIS_SERVER") or _which("redis-server")
    if not binary:
        pytest.fail("redis-server is not on PATH (set TOOLGATE_REDIS_SERVER, or run .ci/setup)")
    port = port or free_port()
    persistence = ["--appendonly", "no"] if persist_dir is None else [
        "--appendonly", "yes", "--appendfsync", "always", "--dir", str(persist_dir)]
    proc = procs.start(name, [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                              *persistence, "--daemonize", "no"])
    url = f"redis://127.0.0.1:{port}"
    wait_tcp(f"http://127.0.0.1:{port}", proc)
    return url, proc


def redis_command(url: str, *args: str) -> Any:
    """One Redis command over RESP (no client library needed); returns the decoded reply:
    str, int, None or a list of them."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port or 6379), timeout=5) as sock:
        request = f"*{len(args)}\r\n" + "".join(f"${len(a.encode())}\r\n{a}\r\n" for a in args)
        sock.sendall(request.encode())
        reader = sock.makefile("rb")

        def reply() -> Any:
            line = reader.readline().decode().rstrip("\r\n")
            kind, rest = line[0], line[1:]
            if kind == "+":
                return rest
            if kind == "-":
                raise RuntimeError(f"redis: {rest}")
            if kind == ":":
                return int(rest)
            if kind == "$":
                return None if rest == "-1" else reader.read(int(rest) + 2)[:-2].decode()
            if kind == "*":
                return None if rest == "-1" else [reply() for _ in range(int(rest))]
            raise RuntimeError(f"redis: unexpected reply {line!r}")

        return reply()


def _postgres_bindir() -> Path:
    """Where initdb and postgres are: $TOOLGATE_POSTGRES_BINDIR, `pg_config --bindir`, or the
    newest /usr/lib/postgresql/*/bin (Debian's layout, which .ci/setup installs)."""
    if env := os.environ.get("TOOLGATE_POSTGRES_BINDIR"):
        return Path(env)
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name)
                        if p.parent.name.isdigit() else 0, reverse=True)
    if pg_config := _which("pg_config"):
        done = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
        if done.returncode == 0:
            candidates.insert(0, Path(done.stdout.strip()))
    for candidate in candidates:
        if (candidate / "initdb").exists() and (candidate / "postgres").exists():
            return candidate
    pytest.fail("no PostgreSQL server binaries (initdb, postgres) found; set TOOLGATE_POSTGRES_BINDIR")


class PrivatePostgres:
    """A throw-away PostgreSQL cluster of the test's own (initdb in a scratch directory, trust
    auth, fsync off), so it can be stopped and started again under a gateway without
    disturbing the shared one. PostgreSQL refuses to run as root: as root, it runs as the
    `postgres` user. `close()` removes the cluster."""

    def __init__(self, procs: Procs, name: str = "postgres-private") -> None:
        self.procs, self.name = procs, name
        self.bindir = _postgres_bindir()
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        self.dir = Path(tempfile.mkdtemp(prefix="toolgate-pg-"))
        if self.as_user:
            shutil.chown(self.dir, "postgres")
        self.data = self.dir / "data"
        done = subprocess.run([*self.as_user, str(self.bindir / "initdb"), "-D", str(self.data), "-A", "trust",
                               "-U", "toolgate", "--no-sync", "-E", "UTF8"],
                              capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            pytest.fail(f"initdb failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        self.port = free_port()
        self.url = f"postgres://toolgate@127.0.0.1:{self.port}/postgres"
        self.proc: Proc | None = None
        self.starts = 0

    def start(self) -> None:
        """Starts the server on its port (again, after `stop`)."""
        self.starts += 1
        self.proc = self.procs.start(f"{self.name}-{self.starts}", [
            *self.as_user, str(self.bindir / "postgres"), "-D", str(self.data), "-p", str(self.port),
            "-k", str(self.dir), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
        wait_tcp(f"http://127.0.0.1:{self.port}", self.proc)

    def stop(self) -> None:
        """Fast shutdown (SIGINT): open transactions are rolled back, clients disconnected."""
        assert self.proc is not None
        self.proc.signal_group(signal.SIGINT)
        self.proc.proc.wait(timeout=30)

    def close(self) -> None:
        if self.proc is not None and self.proc.proc.poll() is None:
            self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def start_everything_http(procs: Procs) -> str:
    """mcp-server-everything streamableHttp on a free port (env PORT); returns its /mcp URL."""
    port = free_port()
    proc = procs.start("everything_http", everything_command("streamableHttp"), env={"PORT": str(port)})
    url = f"http://127.0.0.1:{port}/mcp"
    proc.wait_for(lambda err: "listening on port" in err, stream="stderr")
    wait_tcp(url, proc)
    return url


# ------------------------------------------------------------------- gateway
@dataclass
class Gateway:
    proc: Proc
    base: str  # http://127.0.0.1:PORT
    url: str | None = None  # quick mode: the announced proxy URL
    token: str | None = None  # quick mode: the announced grant token
    workdir: Path | None = None

    def server_url(self, server: str) -> str:
        return f"{self.base}/mcp/{server}"

    @property
    def pid(self) -> int:
        return self.proc.pid


def wait_ready(gw_proc: Proc, base: str, timeout: float = STARTUP_TIMEOUT) -> None:
    """Wait until GET /readyz answers 200 (every upstream ready)."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while True:
        try:
            r = httpx.get(f"{base}/readyz", timeout=2)
            if r.status_code == 200:
                return
            last = f"HTTP {r.status_code}: {r.text.strip()}"
        except httpx.HTTPError as exc:
            last = repr(exc)
        if gw_proc.proc.poll() is not None:
            pytest.fail(f"toolgate exited before it was ready.\n{gw_proc.describe()}")
        if time.monotonic() > deadline:
            pytest.fail(f"toolgate not ready within {timeout:g}s (last /readyz: {last}).\n{gw_proc.describe()}")
        time.sleep(0.1)


def start_gateway_quick(procs: Procs, workdir: Path, policy: dict[str, Any], *, upstream: str | None = None,
                        command: list[str] | None = None, env: dict[str, str] | None = None,
                        name: str = "toolgate", args: list[str] | None = None) -> Gateway:
    """`toolgate serve --policy … [ARGS…] (--upstream URL | -- CMD…) --listen 127.0.0.1:0`."""
    binary = gateway_binary()
    workdir.mkdir(parents=True, exist_ok=True)
    policy_path = workdir / f"{name}.policy.json"
    policy_path.write_text(json.dumps(policy, indent=2))
    argv = [str(binary), "serve", "--policy", str(policy_path), "--listen", "127.0.0.1:0", *(args or [])]
    if upstream:
        argv += ["--upstream", upstream]
    if command:
        argv += ["--", *command]
    # cwd = a scratch directory: quick mode may create its data dir there.
    proc = procs.start(name, argv, cwd=workdir, env=env)
    url, token = proc.wait_for(quick_announcement)
    parts = urlsplit(url)
    base = f"{parts.scheme}://{parts.netloc}"
    wait_ready(proc, base)
    return Gateway(proc=proc, base=base, url=url, token=token, workdir=workdir)


def start_gateway_config(procs: Procs, workdir: Path, config_text: str, *,
                         policies: dict[str, dict[str, Any]] | None = None, env: dict[str, str] | None = None,
                         name: str = "toolgate", config_name: str = "toolgate.toml",
                         config_path: Path | None = None, ready: bool = True,
                         extra_args: list[str] | None = None) -> Gateway:
    """`toolgate serve --config FILE --listen 127.0.0.1:PORT --data-dir …`.

    `policies` maps file names (relative to the config file) to policy documents, written
    next to it. With `config_path` an existing configuration file is used as is."""
    binary = gateway_binary()
    workdir.mkdir(parents=True, exist_ok=True)
    if config_path is None:
        config_path = workdir / config_name
        config_path.write_text(config_text)
        for file_name, doc in (policies or {}).items():
            (workdir / file_name).write_text(json.dumps(doc, indent=2))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    argv = [str(binary), "serve", "--config", str(config_path), "--listen", f"127.0.0.1:{port}",
            "--data-dir", str(workdir / f"{name}-data"), *(extra_args or [])]
    proc = procs.start(name, argv, cwd=workdir, env=env)
    if ready:
        wait_ready(proc, base)
    else:
        wait_tcp(base, proc)
    return Gateway(proc=proc, base=base, workdir=workdir)


def started_lazily(start: Callable[..., T]) -> Callable[..., T]:
    """What a module's tests share, started on first use from a test body (so that a missing
    binary or a process that does not start is a test failure, not a fixture error) and
    then reused: `get(key)` calls `start(key)` once per key (`get()`: `start()` once)."""
    started: dict[Any, T] = {}

    def get(*key: Any) -> T:
        gateway_binary()  # fail fast, before starting any upstream
        if key not in started:
            started[key] = start(*key)
        return started[key]

    return get


def quick_gateways(procs: Procs, workdir: Path, policy: dict[str, Any], *, stdio_command: Callable[[], list[str]],
                   http_upstream: Callable[[], str], name: str) -> Callable[[str], Gateway]:
    """`get(transport)`: a quick-mode gateway (started once, see `started_lazily`) in front of
    an upstream that it runs as a stdio child (`"stdio"`: `stdio_command()`) or reaches over
    Streamable HTTP (`"http"`: `http_upstream()` starts it and returns its URL)."""

    def start(transport: str) -> Gateway:
        if transport == "stdio":
            return start_gateway_quick(procs, workdir / transport, policy, command=stdio_command(),
                                       name=f"{name}-stdio")
        return start_gateway_quick(procs, workdir / transport, policy, upstream=http_upstream(),
                                   name=f"{name}-http")

    return started_lazily(start)


# ------------------------------------------------------------------- clients
def run(fn: Callable[[], Awaitable[Any]], timeout: float = 60.0) -> Any:
    """Run an async test body with a hard time limit."""

    async def main() -> Any:
        with anyio.fail_after(timeout):
            return await fn()

    return anyio.run(main)


@contextlib.asynccontextmanager
async def http_client(url: str, token: str | None, *, headers: dict[str, str] | None = None,
                      timeout: float = 30.0, mode: str = "legacy", **kwargs: Any) -> AsyncIterator[Client]:
    """An mcp.Client over Streamable HTTP carrying `Authorization: Bearer <token>`."""
    all_headers = dict(headers or {})
    if token is not None:
        all_headers["Authorization"] = f"Bearer {token}"
    async with httpx2.AsyncClient(headers=all_headers, timeout=httpx2.Timeout(timeout, read=timeout)) as http:
        async with Client(streamable_http_client(url, http_client=http), mode=mode, cache=None,
                          read_timeout_seconds=timeout, **kwargs) as client:
            yield client


@contextlib.asynccontextmanager
async def stdio_client(argv: list[str], *, env: dict[str, str] | None = None, timeout: float = 30.0,
                       **kwargs: Any) -> AsyncIterator[Client]:
    """An mcp.Client talking to a child process over stdio (a direct reference connection)."""
    params = StdioServerParameters(command=argv[0], args=argv[1:], env={**os.environ, **(env or {})})
    async with Client(params, mode="legacy", cache=None, read_timeout_seconds=timeout, **kwargs) as client:
        yield client


async def list_all_tools(client: Client) -> tuple[list[str], int]:
    """Walk every tools/list page; returns (tool names in order, number of pages)."""
    names: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        page = await client.list_tools(cursor=cursor)
        pages += 1
        names.extend(t.name for t in page.tools)
        cursor = page.next_cursor
        if not cursor:
            return names, pages
        if pages > 100:
            raise AssertionError("tools/list pagination does not end")


def call_tool_once(gw: Gateway, tool: str, args: dict[str, Any], callbacks: ClientCallbacks | None = None) -> Any:
    """One tools/call through `gw` on a fresh SDK client session (with `callbacks`'
    client capabilities, if given); returns the result."""

    async def body() -> Any:
        async with http_client(gw.url, gw.token, **(callbacks.kwargs() if callbacks else {})) as client:
            return await client.call_tool(tool, args)

    return run(body)


class ClientCallbacks:
    """Client callbacks that record the server-to-client requests relayed to them and answer
    with canned results: elicitation (`elicit_action`; accepting, with `elicit_content`),
    sampling (`sampling_model` answering `sampling_text`) and, given `roots`, roots/list."""

    def __init__(self, *, elicit_content: dict[str, Any], sampling_model: str, sampling_text: str,
                 elicit_action: str = "accept", roots: list[types.Root] | None = None) -> None:
        self.elicit_action = elicit_action
        self.elicit_content = elicit_content
        self.sampling_model = sampling_model
        self.sampling_text = sampling_text
        self.roots = roots
        self.elicitations: list[types.ElicitRequestParams] = []
        self.samplings: list[types.CreateMessageRequestParams] = []
        self.roots_calls = 0

    async def on_elicit(self, ctx: ClientRequestContext, params: types.ElicitRequestParams) -> types.ElicitResult:
        self.elicitations.append(params)
        if self.elicit_action == "accept":
            return types.ElicitResult(action="accept", content=self.elicit_content)
        return types.ElicitResult(action=self.elicit_action)  # type: ignore[arg-type]

    async def on_sampling(self, ctx: ClientRequestContext,
                          params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        self.samplings.append(params)
        return types.CreateMessageResult(role="assistant", model=self.sampling_model,
                                         content=types.TextContent(type="text", text=self.sampling_text),
                                         stop_reason="endTurn")

    async def on_roots(self, ctx: ClientRequestContext) -> types.ListRootsResult:
        self.roots_calls += 1
        return types.ListRootsResult(roots=self.roots or [])

    def kwargs(self) -> dict[str, Any]:
        """The mcp.Client keyword arguments that install the callbacks (roots only if given)."""
        kwargs: dict[str, Any] = {"elicitation_callback": self.on_elicit, "sampling_callback": self.on_sampling}
        if self.roots is not None:
            kwargs["list_roots_callback"] = self.on_roots
        return kwargs


# ---------------------------------------------------------------- assertions
def decision_of(result: Any) -> dict[str, Any] | None:
    meta = result.meta or {}
    return meta.get("toolgate/decision")


def assert_allowed(result: Any) -> None:
    assert not result.is_error, f"expected an allowed call, got {result.model_dump(by_alias=True, exclude_none=True)}"
    decision = decision_of(result)
    assert decision is None or decision.get("decision") == "allow", f"allowed call carries decision {decision}"


def assert_denied(result: Any, rule: str, message: str, decision: str = "deny") -> None:
    """A policy denial as SPEC §4 defines it."""
    dump = result.model_dump(by_alias=True, exclude_none=True)
    assert result.is_error is True, f"expected a denial result, got {dump}"
    assert len(result.content) == 1 and result.content[0].type == "text", f"one text block expected: {dump}"
    assert result.content[0].text == f"[POLICY DENIED] {message}", dump
    assert result.structured_content is None, f"a denial has no structuredContent: {dump}"
    assert decision_of(result) == {"decision": decision, "rule": rule, "message": message}, dump


def assert_rate_limited(result: Any, rule: str, max_label: str, window_label: str, counter: str,
                        window_ms: int) -> int:
    """A `rate_limited` refusal as SPEC §4 defines it: `[POLICY DENIED] Rate limit of <max> per
    <window> reached for "<counter>"; retry in <s> s`, `_meta["toolgate/decision"]` with the
    limit's rule id and 0 < retry_after_ms <= the window, <s> = retry_after_ms in whole
    seconds, rounded up. Returns retry_after_ms."""
    dump = result.model_dump(by_alias=True, exclude_none=True)
    assert result.is_error is True, f"expected a rate_limited result, got {dump}"
    decision = decision_of(result)
    assert isinstance(decision, dict), f"no toolgate/decision in {dump}"
    assert set(decision) == {"decision", "rule", "message", "retry_after_ms"}, dump
    assert decision["decision"] == "rate_limited", dump
    assert decision["rule"] == rule, dump
    retry = decision["retry_after_ms"]
    assert isinstance(retry, int) and 0 < retry <= window_ms, f"retry_after_ms out of (0, {window_ms}]: {dump}"
    message = (f'Rate limit of {max_label} per {window_label} reached for "{counter}"; '
               f"retry in {-(-retry // 1000)} s")
    assert decision["message"] == message, dump
    assert len(result.content) == 1 and result.content[0].type == "text", f"one text block expected: {dump}"
    assert result.content[0].text == f"[POLICY DENIED] {message}", dump
    assert result.structured_content is None, f"a denial has no structuredContent: {dump}"
    return retry


def assert_unknown_tool(exc: BaseException, name: str) -> None:
    from mcp import MCPError

    assert isinstance(exc, MCPError), f"expected MCPError, got {exc!r}"
    assert exc.code == -32602, f"expected -32602, got {exc.code} {exc.error.message!r}"
    assert exc.error.message == f"Unknown tool: {name}", exc.error.message


# --------------------------------------------------------------- raw session
@dataclass
class RawSession:
    """A hand-driven session-based MCP conversation over plain httpx."""

    url: str
    token: str | None
    extra_headers: dict[str, str] = field(default_factory=dict)
    session_id: str | None = None
    next_id: int = 1
    client: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=30))

    def headers(self) -> dict[str, str]:
        h = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
             "MCP-Protocol-Version": PROTOCOL_VERSION, **self.extra_headers}
        if self.token is not None:
            h["Authorization"] = f"Bearer {self.token}"
        if self.session_id:
            h["Mcp-Session-Id"] = self.session_id
        return h

    def post(self, message: dict[str, Any]) -> httpx.Response:
        return self.client.post(self.url, headers=self.headers(), content=json.dumps(message))

    def initialize(self) -> httpx.Response:
        msg = {"jsonrpc": "2.0", "id": 0, "method": "initialize",
               "params": {"protocolVersion": PROTOCOL_VERSION, "capabilities": {},
                          "clientInfo": {"name": "e2e-raw", "version": "0"}}}
        h = self.headers()
        h.pop("MCP-Protocol-Version", None)
        r = self.client.post(self.url, headers=h, content=json.dumps(msg))
        assert r.status_code == 200, f"initialize: HTTP {r.status_code} {r.text}"
        self.session_id = r.headers.get("mcp-session-id")
        n = self.post({"jsonrpc": "2.0", "method": "notifications/initialized"})
        assert n.status_code in (200, 202), f"notifications/initialized: HTTP {n.status_code} {n.text}"
        return r

    def message(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """A request with the next id (not sent)."""
        msg: dict[str, Any] = {"jsonrpc": "2.0", "id": self.next_id, "method": method}
        self.next_id += 1
        if params is not None:
            msg["params"] = params
        return msg

    def request(self, method: str, params: dict[str, Any] | None = None) -> tuple[httpx.Response, dict[str, Any]]:
        msg = self.message(method, params)
        r = self.post(msg)
        return r, response_message(r, msg["id"])

    def stream(self, message: dict[str, Any] | None = None, *, last_event_id: str | None = None,
               timeout: float = 10.0) -> contextlib.AbstractContextManager[httpx.Response]:
        """A streamed POST of `message`, or (without one) a GET for the session's SSE stream,
        resuming after `last_event_id` if given. Every read waits at most `timeout` s."""
        h = self.headers()
        if message is None:
            h.pop("Content-Type")
            h["Accept"] = "text/event-stream"
            if last_event_id is not None:
                h["Last-Event-ID"] = last_event_id
            return self.client.stream("GET", self.url, headers=h, timeout=timeout)
        return self.client.stream("POST", self.url, headers=h, content=json.dumps(message), timeout=timeout)

    def close(self) -> None:
        with contextlib.suppress(httpx.HTTPError):
            if self.session_id:
                self.client.delete(self.url, headers=self.headers())
        self.client.close()


def response_message(r: httpx.Response, rid: Any) -> dict[str, Any]:
    """The JSON-RPC response with id `rid` from a JSON or SSE HTTP answer."""
    ctype = r.headers.get("content-type", "")
    if ctype.startswith("application/json"):
        return r.json()
    if ctype.startswith("text/event-stream"):
        for event in sse_events(r.text.splitlines()):
            msg = event.message
            if isinstance(msg, dict) and msg.get("id") == rid and ("result" in msg or "error" in msg):
                return msg
        raise AssertionError(f"no response with id {rid} in SSE body: {r.text[:2000]}")
    raise AssertionError(f"unexpected answer HTTP {r.status_code} {ctype}: {r.text[:2000]}")


# ------------------------------------------------------------------- SSE
@dataclass
class SseEvent:
    """One dispatched server-sent event (`data` lines joined with newlines)."""

    id: str | None
    data: str
    event: str | None = None
    retry: int | None = None

    @property
    def message(self) -> Any:
        """The JSON-RPC message it carries; None for an event without data (a priming event)."""
        return json.loads(self.data) if self.data.strip() else None


def sse_events(lines: Iterable[str]) -> Iterator[SseEvent]:
    """Decodes SSE lines (without their line ends) into events, as they come.

    Comments are skipped; an event is yielded when it has data or an id, so that MCP
    priming events (an id, empty data) are seen too."""
    event_id: str | None = None
    name: str | None = None
    retry: int | None = None
    data: list[str] = []
    seen_id = False
    for line in lines:
        if not line:
            if data or seen_id:
                yield SseEvent(id=event_id, data="\n".join(data), event=name, retry=retry)
            event_id, name, retry, data, seen_id = None, None, None, [], False
            continue
        if line.startswith(":"):
            continue
        field_name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field_name == "data":
            data.append(value)
        elif field_name == "id":
            event_id, seen_id = value, True
        elif field_name == "event":
            name = value
        elif field_name == "retry" and value.isdigit():
            retry = int(value)
    if data or seen_id:
        yield SseEvent(id=event_id, data="\n".join(data), event=name, retry=retry)


def iter_sse(response: httpx.Response) -> Iterator[SseEvent]:
    """The events of a streamed (`httpx.Client.stream`) SSE response, as they arrive."""
    ctype = response.headers.get("content-type", "")
    assert response.status_code == 200 and ctype.startswith("text/event-stream"), (
        f"expected an SSE stream, got HTTP {response.status_code} {ctype}: {response.read()[:2000]!r}")
    return sse_events(response.iter_lines())


# ----------------------------------------------------------- process table
def proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, ppid) of a process from /proc, or None if it does not exist."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    rest = raw[raw.rfind(")") + 2:].split()
    return rest[0], int(rest[1])


def children_of(pid: int) -> list[tuple[int, str, str]]:
    """(pid, state, cmdline) of every process whose parent is `pid`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        st = proc_stat(int(entry.name))
        if st is None or st[1] != pid:
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            cmd = ""
        found.append((int(entry.name), st[0], cmd))
    return found


def pid_running(pid: int) -> bool:
    """True if the process exists and is not a zombie."""
    st = proc_stat(pid)
    return st is not None and st[0] not in ("Z", "X")
