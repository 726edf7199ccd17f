"""The audit log end to end (SPEC §9; issue 4): the official Python SDK client → toolgate →
py_upstream.py, then `toolgate audit query|verify` on the gateway's data directory.

- one record per authenticated JSON-RPC request, with the SPEC §9 fields, for allowed,
  denied, hidden and rate-limited calls, and outcomes for forwarded ones (`ok`,
  `tool_error`, a JSON-RPC error);
- argument values never stored by default (only sorted keys and the SHA-256 of the
  canonical arguments); with `capture = "full"`, `redact` paths masked;
- a gateway killed with SIGKILL under a load of concurrent calls loses no record of any
  call the upstream executed (the upstream writes down every call it ran);
- fail closed: when the audit log cannot be written, calls are refused and never reach the
  upstream (those already taken by the journal are committed once the store is back); the
  gateway recovers by itself once it can write again;
- the admin stream: the policies a gateway loaded, with their versions.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import signal
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import anyio
import pytest
from mcp import MCPError

from e2e_helpers import (
    FIXTURES,
    PYTHON,
    Gateway,
    Proc,
    Procs,
    assert_allowed,
    assert_denied,
    assert_rate_limited,
    free_port,
    gateway_binary,
    http_client,
    ready_url,
    run,
    start_gateway_config,
    start_py_upstream_http,
)

TOKEN = "tg-e2e-audit-grant-token-0123456789"
SHARED_POSTGRES = os.environ.get("TOOLGATE_TEST_POSTGRES_URL", "postgres://toolgate@127.0.0.1:5432/toolgate")
SECRET_VALUE = "s3cret-argument-value-never-stored"

POLICY: dict[str, Any] = {
    "version": "1",
    "default": "deny",
    "hide": ["secret_admin"],
    "tools": {
        "echo": {},
        "tool_error": {},
        "jsonrpc_error": {},
        "record_run": {},
        "delete_everything": {"action": "deny", "on_deny": "Nothing gets deleted."},
        "add": {"limits": [{"counter": "adds", "window": "minute", "max": 1}]},
    },
}


def canonical_sha256(args: dict[str, Any]) -> str:
    text = json.dumps(args, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def start_upstream(procs: Procs, ran_file: Path | None = None, name: str = "py_upstream-audit") -> str:
    return start_py_upstream_http(procs, name=name, ran_file=ran_file)[0]


def start(procs: Procs, workdir: Path, upstream: str, *, audit: str = "", name: str = "toolgate-audit") -> Gateway:
    config = "\n".join([
        "[gateway]",
        "[servers.py]",
        f'url = "{upstream}"',
        "",
        audit,
        "[[grants]]",
        'name = "auditor"',
        f'token = "{TOKEN}"',
        'policies = { py = "policy.json" }',
        "",
    ])
    return start_gateway_config(procs, workdir, config, policies={"policy.json": POLICY}, name=name)


def data_dir(gw: Gateway, name: str = "toolgate-audit") -> Path:
    assert gw.workdir is not None
    return gw.workdir / f"{name}-data"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(gateway_binary()), "audit", *args], capture_output=True, text=True, timeout=60)


def query(directory: Path, *filters: str) -> list[dict[str, Any]]:
    done = cli("query", "--json", "--data-dir", str(directory), *filters)
    assert done.returncode == 0, f"audit query failed ({done.returncode}): {done.stdout}\n{done.stderr}"
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


def settled(directory: Path, calls: int) -> list[dict[str, Any]]:
    """The records once `calls` tools/call records are in and every forwarded request has its
    outcome: a record is durable in the journal before its request is forwarded, but SQLite
    (which the audit commands read) takes the journal in only every 20 ms, and outcomes too."""
    deadline = time.monotonic() + 5
    while True:
        records = query(directory)
        complete = sum(r["method"] == "tools/call" for r in records) >= calls and all(
            r["upstream_status"] for r in records if r["forwarded"])
        if complete or time.monotonic() > deadline:
            return records
        time.sleep(0.05)


def store_files(directory: Path) -> list[Path]:
    """Every file the gateway keeps in its data directory (the database, its WAL, the journal)."""
    return [path for path in directory.rglob("*") if path.is_file()]


def verify_ok(directory: Path) -> None:
    done = cli("verify", "--data-dir", str(directory))
    assert done.returncode == 0, f"audit verify failed ({done.returncode}): {done.stdout}\n{done.stderr}"


def test_every_request_is_recorded_with_its_decision_and_outcome(procs: Procs, tmp_path: Path) -> None:
    gw = start(procs, tmp_path, start_upstream(procs))
    url = gw.server_url("py")

    async def body() -> None:
        async with http_client(url, TOKEN) as client:
            assert_allowed(await client.call_tool("echo", {"text": SECRET_VALUE}))
            assert_denied(await client.call_tool("delete_everything", {"confirm": SECRET_VALUE}),
                          "/tools/delete_everything/action", "Nothing gets deleted.")
            with pytest.raises(MCPError):
                await client.call_tool("secret_admin", {})
            assert_allowed(await client.call_tool("add", {"a": 1, "b": 2}))
            assert_rate_limited(await client.call_tool("add", {"b": 4, "a": 3}), "/tools/add/limits/adds",
                                "1", "minute", "adds", 60_000)
            assert (await client.call_tool("tool_error", {"message": "boom"})).is_error
            with pytest.raises(MCPError):
                await client.call_tool("jsonrpc_error", {"message": "kaput"})

    run(body)
    records = settled(data_dir(gw), calls=7)
    unsettled = [r for r in records if r["forwarded"] and not r["upstream_status"]]
    assert not unsettled, f"forwarded requests without an outcome: {unsettled}"
    by_tool = {r["tool"]: r for r in records if r["method"] == "tools/call" and r["tool"] != "add"}
    adds = [r for r in records if r.get("tool") == "add"]
    methods = [r["method"] for r in records]
    assert methods[0] == "initialize", methods

    fields = {"ts", "request_id", "jsonrpc_id", "session_id", "grant_id", "grant", "identity", "server", "method",
              "tool", "policy_id", "policy_version", "decision", "rule", "message", "arg_keys", "args_sha256",
              "upstream_status", "latency_ms", "approval_id", "hash", "prev_hash"}
    for record in records:
        assert fields <= record.keys(), f"missing {fields - record.keys()} in {record}"
        assert record["grant"] == "auditor" and record["server"] == "py", record
        assert len(record["grant_id"]) == 16, record
        assert record["ts"].endswith("Z") and len(record["ts"]) == 24, record
        assert "args" not in record, record
    assert len({r["request_id"] for r in records}) == len(records)

    echo = by_tool["echo"]
    assert echo["decision"] == "allow" and echo["upstream_status"] == "ok", echo
    assert echo["arg_keys"] == ["text"]
    assert echo["args_sha256"] == canonical_sha256({"text": SECRET_VALUE})
    assert echo["policy_id"].endswith("policy.json") and echo["policy_version"], echo
    assert echo["session_id"] and isinstance(echo["latency_ms"], float), echo

    denied = by_tool["delete_everything"]
    assert (denied["decision"], denied["rule"], denied["message"]) == (
        "deny", "/tools/delete_everything/action", "Nothing gets deleted."), denied
    assert denied["upstream_status"] is None and denied["latency_ms"] is None, denied

    assert by_tool["secret_admin"]["decision"] == "hide", by_tool["secret_admin"]
    assert by_tool["secret_admin"]["upstream_status"] is None

    assert [a["decision"] for a in adds] == ["allow", "rate_limited"], adds
    assert adds[1]["rule"] == "/tools/add/limits/adds", adds[1]
    # Key order in the call does not change the digest: the arguments are canonicalized.
    assert adds[0]["arg_keys"] == adds[1]["arg_keys"] == ["a", "b"]
    assert adds[1]["args_sha256"] == canonical_sha256({"a": 3, "b": 4})

    assert by_tool["tool_error"]["upstream_status"] == "tool_error", by_tool["tool_error"]
    assert by_tool["jsonrpc_error"]["upstream_status"].startswith("error -32"), by_tool["jsonrpc_error"]

    # The admin stream: the policy the gateway loaded, with the version its records carry.
    admin = query(data_dir(gw), "--admin")
    # The tools the gateway saw were pinned (SPEC §10); the rest is the policy it loaded.
    pinned = {a["subject"] for a in admin if a["action"] == "tool_pinned"}
    assert {"py/echo", "py/add"} <= pinned, pinned
    admin = [a for a in admin if a["action"] != "tool_pinned"]
    assert [(a["action"], a["actor"], a["detail"]["grant"], a["detail"]["server"]) for a in admin] == [
        ("policy_loaded", "gateway", "auditor", "py")], admin
    assert admin[0]["subject"] == echo["policy_id"] and admin[0]["detail"]["version"] == echo["policy_version"]

    # Filters, and the chain.
    assert [r["tool"] for r in query(data_dir(gw), "--decision", "deny")] == ["delete_everything"]
    assert len(query(data_dir(gw), "--tool", "add")) == 2
    verify_ok(data_dir(gw))
    # No argument value anywhere in the store's files.
    for file in store_files(data_dir(gw)):
        assert SECRET_VALUE.encode() not in file.read_bytes(), f"{file} holds an argument value"


def test_capture_full_stores_arguments_with_redacted_paths_masked(procs: Procs, tmp_path: Path) -> None:
    audit = '[audit]\ncapture = "full"\nredact = ["args.message"]\n'
    gw = start(procs, tmp_path, start_upstream(procs, name="py_upstream-audit-full"), audit=audit)

    async def body() -> None:
        async with http_client(gw.server_url("py"), TOKEN) as client:
            assert_allowed(await client.call_tool("echo", {"text": "kept"}))
            assert (await client.call_tool("tool_error", {"message": SECRET_VALUE})).is_error

    run(body)
    calls = {r["tool"]: r for r in settled(data_dir(gw), calls=2) if r["method"] == "tools/call"}
    assert calls["echo"]["args"] == {"text": "kept"}, calls["echo"]
    assert calls["tool_error"]["args"] == {"message": "[REDACTED]"}, calls["tool_error"]
    # The digest is of the real arguments, so identical calls still match.
    assert calls["tool_error"]["args_sha256"] == canonical_sha256({"message": SECRET_VALUE})
    for file in store_files(data_dir(gw)):
        assert SECRET_VALUE.encode() not in file.read_bytes(), f"{file} holds a redacted value"


@pytest.mark.parametrize("store", ["embedded", "postgres"])
def test_sigkill_under_load_loses_no_record_of_a_call_that_ran(procs: Procs, tmp_path: Path, store: str) -> None:
    """The embedded store, and PostgreSQL (cluster mode; tags are unique to this run, so the
    shared database's older records do not matter)."""
    ran_file = tmp_path / "ran.txt"
    audit = f'[store]\npostgres_url = "{SHARED_POSTGRES}"\n' if store == "postgres" else ""
    gw = start(procs, tmp_path, start_upstream(procs, ran_file, name="py_upstream-audit-kill"), audit=audit,
               name="toolgate-audit-kill")
    url = gw.server_url("py")
    started = anyio.Event()

    async def client_loop(index: int) -> None:
        try:
            async with http_client(url, TOKEN, timeout=10) as client:
                for j in range(10_000):
                    await client.call_tool("record_run", {"tag": f"c{index}-{j}-{secrets.token_hex(3)}"})
                    if index == 0 and j == 20:
                        started.set()
        except BaseException:  # the gateway is killed under us: every client ends in an error
            started.set()

    async def body() -> None:
        async with anyio.create_task_group() as tg:
            for i in range(8):
                tg.start_soon(client_loop, i)
            await started.wait()
            await anyio.sleep(0.3)
            os.kill(gw.pid, signal.SIGKILL)

    run(body, timeout=120)
    gw.proc.proc.wait(timeout=10)
    time.sleep(0.5)  # calls already inside the upstream finish writing their tag
    ran = ran_file.read_text().split()
    assert len(ran) >= 20, f"the load never got going: {len(ran)} calls ran"
    if store == "postgres":
        done = cli("query", "--json", "--config", str(tmp_path / "toolgate.toml"), "--tool", "record_run")
        assert done.returncode == 0, f"audit query failed: {done.stdout}\n{done.stderr}"
        recorded = {json.loads(line)["args_sha256"] for line in done.stdout.splitlines()}
        done = cli("verify", "--config", str(tmp_path / "toolgate.toml"))
        assert done.returncode == 0, f"audit verify failed: {done.stdout}\n{done.stderr}"
    else:
        recorded = {r["args_sha256"] for r in query(data_dir(gw, "toolgate-audit-kill"), "--tool", "record_run")}
        verify_ok(data_dir(gw, "toolgate-audit-kill"))
    missing = [tag for tag in ran if canonical_sha256({"tag": tag}) not in recorded]
    assert not missing, f"{len(missing)} of {len(ran)} calls that ran have no audit record: {missing[:5]}"


def test_calls_are_refused_while_the_audit_log_cannot_be_written(procs: Procs, tmp_path: Path) -> None:
    ran_file = tmp_path / "ran.txt"
    gw = start(procs, tmp_path, start_upstream(procs, ran_file, name="py_upstream-audit-closed"),
               name="toolgate-audit-closed")
    url = gw.server_url("py")
    database = data_dir(gw, "toolgate-audit-closed") / "toolgate.db"

    def tamper(sql: str) -> None:
        with sqlite3.connect(database, timeout=10) as conn:
            conn.executescript(sql)

    refused_tags: list[str] = []

    async def body() -> None:
        async with http_client(url, TOKEN) as client:
            assert_allowed(await client.call_tool("record_run", {"tag": "before"}))
            # The audit table goes away (as a broken disk would make it unwritable). Calls
            # the journal takes until the next commit fails are durable and go ahead; once
            # commits fail, every call must commit its own record, and is refused.
            tamper("ALTER TABLE audit_log RENAME TO audit_log_away;")
            deadline = time.monotonic() + 10
            while not refused_tags:
                assert time.monotonic() < deadline, "calls were still forwarded 10 s after the audit log broke"
                tag = f"during-{secrets.token_hex(4)}"
                try:
                    assert_allowed(await client.call_tool("record_run", {"tag": tag}))
                except MCPError as refused:
                    assert "audit log unavailable" in str(refused), refused
                    refused_tags.append(tag)
                await anyio.sleep(0.005)
            with pytest.raises(MCPError) as again:
                await client.call_tool("record_run", {"tag": "refused-again"})
            assert "audit log unavailable" in str(again.value), again.value
            # Writable again: the gateway recovers without a restart.
            tamper("ALTER TABLE audit_log_away RENAME TO audit_log;")
            assert_allowed(await client.call_tool("record_run", {"tag": "after"}))

    run(body)
    ran = ran_file.read_text().split()
    assert ran[0] == "before" and ran[-1] == "after", ran
    assert refused_tags[0] not in ran and "refused-again" not in ran, "a refused call reached the upstream"
    # Every call that ran has its record, those taken while the store was broken included.
    directory = data_dir(gw, "toolgate-audit-closed")
    records = settled(directory, calls=len(ran))
    recorded = {r["args_sha256"] for r in records if r["tool"] == "record_run"}
    missing = [tag for tag in ran if canonical_sha256({"tag": tag}) not in recorded]
    assert not missing, f"calls that ran without an audit record: {missing}"
    verify_ok(directory)


@pytest.fixture
def small_disk(tmp_path: Path) -> Any:
    """A real 8 MiB filesystem (tmpfs) for a gateway's data directory, and a way to fill it.
    Mounting needs root, which the CI machine has; elsewhere this fails, saying so."""
    mount_point = tmp_path / "toolgate-audit-full-data"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m,mode=0700", "tmpfs", str(mount_point)],
                             capture_output=True, text=True)
    assert mounted.returncode == 0, f"the full-disk test mounts a small tmpfs and needs root: {mounted.stderr}"
    try:
        yield mount_point
    finally:
        # Lazy: the gateway may still hold files there until the fixture that started it ends.
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(directory: Path) -> Path:
    """Writes a file into `directory` until its filesystem is full; returns the file."""
    filler = directory / "filler"
    chunk = b"\0" * 65536
    with open(filler, "wb", buffering=0) as out:
        try:
            while True:
                out.write(chunk)
        except OSError:
            pass
        try:
            while True:
                out.write(b"\0")
        except OSError:
            pass
    return filler


def test_a_full_disk_refuses_calls_and_the_gateway_recovers_when_space_returns(
        procs: Procs, tmp_path: Path, small_disk: Path) -> None:
    """The data directory's filesystem fills up: calls are refused, saying the audit log is
    unavailable because the disk is full, and never run; space comes back, and calls work
    again without a restart. Every call that ran has its record and the chain verifies."""
    ran_file = tmp_path / "ran.txt"
    gw = start(procs, tmp_path, start_upstream(procs, ran_file, name="py_upstream-audit-full-disk"),
               name="toolgate-audit-full")
    assert data_dir(gw, "toolgate-audit-full") == small_disk
    refusals: list[str] = []

    async def body() -> None:
        async with http_client(gw.server_url("py"), TOKEN) as client:
            assert_allowed(await client.call_tool("record_run", {"tag": "before"}))
            filler = fill(small_disk)
            deadline = time.monotonic() + 20
            while not refusals:
                assert time.monotonic() < deadline, "calls were still forwarded 20 s after the disk filled up"
                tag = f"full-{secrets.token_hex(4)}"
                try:
                    assert_allowed(await client.call_tool("record_run", {"tag": tag}))
                except MCPError as refused:
                    refusals.append(tag)
                    message = str(refused)
                    assert "audit log unavailable" in message and "full" in message, message
                await anyio.sleep(0.005)
            filler.unlink()
            assert_allowed(await client.call_tool("record_run", {"tag": "after"}))

    run(body, timeout=60)
    ran = ran_file.read_text().split()
    assert ran[0] == "before" and ran[-1] == "after", ran
    assert refusals[0] not in ran, "a call refused for want of an audit record reached the upstream"
    records = settled(small_disk, calls=len(ran))
    recorded = {r["args_sha256"] for r in records if r["tool"] == "record_run"}
    missing = [tag for tag in ran if canonical_sha256({"tag": tag}) not in recorded]
    assert not missing, f"calls that ran without an audit record: {missing}"
    verify_ok(small_disk)


# ---------------------------------------------------------------- cluster


def test_two_replicas_write_one_postgres_audit_log(procs: Procs, tmp_path: Path) -> None:
    """Cluster mode: two gateways with `[store] postgres_url` write one audit table, each
    on its own hash chain; `audit query --config` merges them, `audit verify` checks every
    chain. The grant name is unique to this run: the database is shared with earlier runs."""
    grant = f"cluster-{secrets.token_hex(4)}"
    upstream = start_upstream(procs, name="py_upstream-audit-cluster")
    config = "\n".join([
        "[gateway]",
        'data_dir = "data"',
        "[store]",
        f'postgres_url = "{SHARED_POSTGRES}"',
        "[servers.py]",
        f'url = "{upstream}"',
        "[[grants]]",
        f'name = "{grant}"',
        f'token = "{TOKEN}"',
        'policies = { py = "policy.json" }',
        "",
    ])
    gateways = [start_gateway_config(procs, tmp_path / f"replica{i}", config, policies={"policy.json": POLICY},
                                     name=f"toolgate-audit-replica{i}") for i in range(2)]

    async def body() -> None:
        async def client(gw: Gateway, index: int) -> None:
            async with http_client(gw.server_url("py"), TOKEN) as c:
                for j in range(10):
                    assert_allowed(await c.call_tool("echo", {"text": f"{index}-{j}"}))

        async with anyio.create_task_group() as tg:
            for i, gw in enumerate(gateways):
                tg.start_soon(client, gw, i)

    run(body)
    config_path = tmp_path / "replica0" / "toolgate.toml"
    deadline = time.monotonic() + 5
    while True:
        done = cli("query", "--json", "--config", str(config_path), "--grant", grant, "--tool", "echo")
        assert done.returncode == 0, f"audit query failed: {done.stdout}\n{done.stderr}"
        echoes = [json.loads(line) for line in done.stdout.splitlines()]
        if all(r["upstream_status"] == "ok" for r in echoes) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert len(echoes) == 20, echoes
    assert all(r["upstream_status"] == "ok" for r in echoes), echoes
    assert {r["args_sha256"] for r in echoes} == {canonical_sha256({"text": f"{i}-{j}"})
                                                   for i in range(2) for j in range(10)}
    done = cli("verify", "--json", "--config", str(config_path))
    assert done.returncode == 0, f"audit verify failed: {done.stdout}\n{done.stderr}"
    chains = [json.loads(line) for line in done.stdout.splitlines()]
    # Each replica has its own chain (and every chain in the table holds).
    assert all(c["ok"] for c in chains), chains
    assert sum(1 for c in chains if c["chain"].startswith("calls@")) >= 2, chains
    # Nothing went to the replicas' embedded stores.
    for i, gw in enumerate(gateways):
        assert query(data_dir(gw, f"toolgate-audit-replica{i}"), "--grant", grant) == []


def test_postgres_going_away_fails_closed_and_the_gateway_recovers(procs: Procs, tmp_path: Path) -> None:
    """PostgreSQL disappears under a running gateway (a TCP relay in between is killed): calls
    are refused with a message saying the audit log is unavailable, and never reach the
    upstream; once PostgreSQL is reachable again, calls go through without a restart."""
    parts = urlsplit(SHARED_POSTGRES)
    relay_port = free_port()
    relay_argv = [PYTHON, str(FIXTURES / "tcp_relay.py"), "--port", str(relay_port),
                  "--target", f"{parts.hostname}:{parts.port or 5432}"]

    def start_relay() -> Proc:
        relay = procs.start("tcp_relay-postgres", relay_argv)
        relay.wait_for(ready_url)
        return relay

    relay = start_relay()
    user = f"{parts.username}@" if parts.username else ""
    via_relay = urlunsplit((parts.scheme, f"{user}127.0.0.1:{relay_port}", parts.path, parts.query, ""))
    grant = f"away-{secrets.token_hex(4)}"
    ran_file = tmp_path / "ran.txt"
    upstream = start_upstream(procs, ran_file, name="py_upstream-audit-away")
    config = "\n".join([
        "[gateway]", "[store]", f'postgres_url = "{via_relay}"', "[servers.py]", f'url = "{upstream}"',
        "[[grants]]", f'name = "{grant}"', f'token = "{TOKEN}"', 'policies = { py = "policy.json" }', "",
    ])
    gw = start_gateway_config(procs, tmp_path, config, policies={"policy.json": POLICY}, name="toolgate-audit-away")

    async def body() -> None:
        # One session throughout: it outlives the outage.
        async with http_client(gw.server_url("py"), TOKEN, timeout=15) as client:

            async def call(tag: str) -> Any:
                """The result, or the JSON-RPC error the call was answered with."""
                try:
                    return await client.call_tool("record_run", {"tag": tag})
                except MCPError as e:
                    return e

            assert_allowed(await call("before"))
            relay.signal_group(signal.SIGKILL)  # PostgreSQL is gone, as far as the gateway can tell
            relay.proc.wait(timeout=10)
            refused = await call("during")
            assert isinstance(refused, MCPError), refused
            assert "audit log unavailable" in str(refused), refused
            start_relay()
            # Recovery needs no restart; the first attempt may still meet the broken connection.
            deadline = time.monotonic() + 15
            while isinstance(result := await call("after"), MCPError):
                assert "audit log unavailable" in str(result), result
                assert time.monotonic() < deadline, f"no recovery within 15 s: {result}"
                await anyio.sleep(0.5)
            assert_allowed(result)

    run(body)
    ran = ran_file.read_text().split()
    assert "during" not in ran and ran[0] == "before" and ran[-1] == "after", ran
    done = cli("query", "--json", "--config", str(tmp_path / "toolgate.toml"), "--grant", grant, "--tool", "record_run")
    assert done.returncode == 0, f"audit query failed: {done.stdout}\n{done.stderr}"
    recorded = [json.loads(line)["args_sha256"] for line in done.stdout.splitlines()]
    assert set(recorded) == {canonical_sha256({"tag": tag}) for tag in ran}, (recorded, ran)


def test_a_rejected_configuration_is_recorded_in_the_admin_stream(procs: Procs, tmp_path: Path) -> None:
    """The gateway refuses to start with a bad configuration, says so, and records why in the
    admin stream of the store it would have used (an existing one: none is created)."""
    gw = start(procs, tmp_path, start_upstream(procs, name="py_upstream-audit-config"), name="toolgate-audit-config")
    gw.proc.stop()
    config = tmp_path / "toolgate.toml"
    config.write_text(config.read_text().replace("[gateway]", "[gateway]\nlisten_on = \"oops\""))
    directory = data_dir(gw, "toolgate-audit-config")
    done = subprocess.run([str(gateway_binary()), "serve", "--config", str(config), "--data-dir", str(directory)],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert "listen_on" in done.stderr and "recorded in the audit log" in done.stderr, done.stderr
    events = query(directory, "--admin")
    assert [e["action"] for e in events] == ["policy_loaded", "config_rejected"], events
    rejected = events[-1]
    assert rejected["subject"] == str(config), rejected
    assert any("listen_on" in error for error in rejected["detail"]["errors"]), rejected
    verify_ok(directory)
    # A data directory without a store stays without one.
    empty = tmp_path / "no-store-here"
    done = subprocess.run([str(gateway_binary()), "serve", "--config", str(config), "--data-dir", str(empty)],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "recorded in the audit log" not in done.stderr, done.stderr
    assert not empty.exists()


def test_a_data_directory_that_cannot_hold_the_store_stops_the_start(tmp_path: Path) -> None:
    """No store, no audit: the gateway refuses to start and names the directory."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps(POLICY))
    done = subprocess.run([str(gateway_binary()), "serve", "--policy", str(policy), "--upstream",
                           "http://127.0.0.1:9/mcp", "--listen", "127.0.0.1:0", "--data-dir", str(blocker / "data")],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode != 0, done
    assert str(blocker / "data") in done.stderr and "Not a directory" in done.stderr, done.stderr
