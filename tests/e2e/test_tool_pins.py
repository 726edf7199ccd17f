"""Pinned tool definitions (SPEC §10; issue 6 point 3), against a hostile upstream built with
the official Python SDK (tests/fixtures/attack_server.py) and the official SDK client:

- the gateway pins every tool's definition when it first sees it;
- a rug pull — the server serving a different definition under the same name — gets that
  tool withheld: gone from `tools/list`, its calls refused with the reason, the change in the
  audit log's admin stream with a diff;
- `toolgate tools list|diff|approve` show and settle it, and the running gateway honours
  the approval at once; an approval of a definition other than the one reviewed is refused.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from e2e_helpers import (
    Gateway,
    Procs,
    assert_allowed,
    assert_denied,
    gateway_binary,
    http_client,
    run,
    start_attack_server,
    start_gateway_config,
    started_lazily,
)

TOKEN = "tg-e2e-pins-0123456789abcdef"
SHARED_POSTGRES = os.environ.get("TOOLGATE_TEST_POSTGRES_URL", "postgres://toolgate@127.0.0.1:5432/toolgate")
ALLOW_ALL: dict[str, Any] = {"version": "1", "default": "allow"}



def evil_config(upstream: str, extra: str = "") -> str:
    """A configuration with the attack server as `evil` and one grant `agent` (TOKEN,
    allow.json), `extra` sections first."""
    return f"""{extra}
[servers.evil]
url = "{upstream}"

[[grants]]
name = "agent"
token = "{TOKEN}"
policies = {{ evil = "allow.json" }}
"""

class Setup:
    def __init__(self, procs: Procs, workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.state = workdir / "rug-state"
        upstream = start_attack_server(procs, "evil", "--state", str(self.state), "--ran", str(workdir / "ran"),
                                       name="attack_evil-pins")
        self.workdir = workdir
        self.config = workdir / "toolgate.toml"
        config = evil_config(upstream)
        self.gateway: Gateway = start_gateway_config(procs, workdir, config, policies={"allow.json": ALLOW_ALL},
                                                     name="toolgate-pins")
        self.data = workdir / "toolgate-pins-data"

    @property
    def url(self) -> str:
        return self.gateway.server_url("evil")

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(gateway_binary()), *args, "--config", str(self.config), "--data-dir", str(self.data)],
                              capture_output=True, text=True, timeout=60, cwd=self.workdir)

    def pins(self) -> dict[str, dict[str, Any]]:
        done = self.cli("tools", "list", "evil", "--json")
        assert done.returncode == 0, done.stdout + done.stderr
        return {p["tool"]: p for p in map(json.loads, done.stdout.splitlines())}

    def admin_events(self, subject: str) -> list[dict[str, Any]]:
        done = self.cli("audit", "query", "--admin", "--json")
        assert done.returncode == 0, done.stdout + done.stderr
        return [e for e in map(json.loads, done.stdout.splitlines()) if e["subject"] == subject]

    def calls(self, tool: str, decision: str) -> list[dict[str, Any]]:
        """The audit records of `tool` with `decision`, waiting (up to 5 s) for the gateway's
        20 ms flush to commit at least one."""
        deadline = time.monotonic() + 5
        while True:
            done = self.cli("audit", "query", "--json", "--tool", tool, "--decision", decision)
            assert done.returncode == 0, done.stdout + done.stderr
            records = [json.loads(line) for line in done.stdout.splitlines()]
            if records or time.monotonic() > deadline:
                return records
            time.sleep(0.05)


@pytest.fixture(scope="module")
def setup(module_procs: Procs, module_tmp: Path) -> Callable[[], Setup]:
    return started_lazily(lambda: Setup(module_procs, module_tmp / "pins"))


def test_a_rug_pull_is_withheld_until_an_operator_approves_the_new_definition(setup: Callable[[], Setup]) -> None:
    s = setup()

    async def before() -> dict[str, Any]:
        async with http_client(s.url, TOKEN) as client:
            tools = {t.name: t for t in (await client.list_tools()).tools}
            assert_allowed(await client.call_tool("add", {"a": 1, "b": 2}))
            return tools

    tools = run(before)
    assert tools["add"].description == "Add two numbers and return the sum.", tools["add"]
    pins = s.pins()
    assert pins["add"]["status"] == "approved" and pins["add"]["approved_by"] == "first-sight", pins["add"]
    assert pins["add"]["flags"] == [], pins["add"]
    first_sha = pins["add"]["sha256"]
    assert s.admin_events("evil/add")[0]["action"] == "tool_pinned"

    message = None

    async def pulled() -> None:
        nonlocal message
        async with http_client(s.url, TOKEN) as client:
            assert_allowed(await client.call_tool("pull_the_rug", {}))
            names = {t.name for t in (await client.list_tools()).tools}
            assert "add" not in names, "a changed definition must be withheld from tools/list"
            assert {"pull_the_rug", "run_command", "record_run"} <= names, names
            result = await client.call_tool("add", {"a": 1, "b": 2})
            message = result.content[0].text.removeprefix("[POLICY DENIED] ")
            assert_denied(result, "(withheld: definition changed)", message)

    run(pulled)
    assert message is not None and 'Tool "add" is withheld: its definition changed since it was approved' in message
    assert "id_rsa" not in message, "the refusal must not repeat the poisoned text to the model"

    # The change is in the admin stream, with a diff; the refused call has its record.
    changed = [e for e in s.admin_events("evil/add") if e["action"] == "tool_changed"]
    assert len(changed) == 1, s.admin_events("evil/add")
    detail = changed[0]["detail"]
    assert detail["approved_sha256"] == first_sha and detail["served_sha256"] != first_sha, detail
    assert '-   "description": "Add two numbers and return the sum.",' in detail["diff"], detail["diff"]
    assert any(line.startswith("+") and "~/.ssh/id_rsa" in line for line in detail["diff"].splitlines()), detail
    refused = s.calls("add", "deny")
    assert refused and refused[-1]["rule"] == "(withheld: definition changed)", refused
    assert refused[-1]["upstream_status"] in (None, ""), refused[-1]

    # The operator looks, and approves what they looked at.
    pins = s.pins()
    assert pins["add"]["status"] == "changed", pins["add"]
    served_sha = pins["add"]["served_sha256"]
    kinds = {f["kind"] for f in pins["add"]["flags"]}
    assert {"hidden_directive", "secret_access"} <= kinds, pins["add"]["flags"]
    pending = s.cli("tools", "list", "--pending")
    assert pending.returncode == 0 and "add" in pending.stdout and "pull_the_rug" not in pending.stdout, pending.stdout
    diff = s.cli("tools", "diff", "evil", "add")
    assert diff.returncode == 0, diff.stderr
    assert f"approved {first_sha[:12]}" in diff.stdout and f"served   {served_sha[:12]}" in diff.stdout, diff.stdout
    assert "+   \"description\": \"Add two numbers and return the sum.\\n\\n<IMPORTANT>" in diff.stdout, diff.stdout

    wrong = s.cli("tools", "approve", "evil", "add", "--sha256", first_sha[:12])
    assert wrong.returncode == 1 and "changed again" in wrong.stderr, wrong.stdout + wrong.stderr
    unknown = s.cli("tools", "approve", "evil", "no_such_tool")
    assert unknown.returncode == 1 and 'has no tool "no_such_tool" on record' in unknown.stderr, unknown.stderr
    approved = s.cli("tools", "approve", "evil", "add", "--sha256", served_sha[:12])
    assert approved.returncode == 0, approved.stdout + approved.stderr
    assert approved.stdout.startswith(f"approved evil/add ({served_sha[:12]})"), approved.stdout

    async def after() -> None:
        async with http_client(s.url, TOKEN) as client:
            tools = {t.name: t for t in (await client.list_tools()).tools}
            assert "<IMPORTANT>" in (tools["add"].description or ""), "the approved definition is served"
            assert_allowed(await client.call_tool("add", {"a": 1, "b": 2}))

    run(after)
    pins = s.pins()
    assert pins["add"]["sha256"] == served_sha and pins["add"]["status"] == "approved", pins["add"]
    assert pins["add"]["approved_by"].startswith("cli"), pins["add"]
    approvals = [e for e in s.admin_events("evil/add") if e["action"] == "tool_approved"]
    assert len(approvals) == 1 and approvals[0]["detail"]["previous_sha256"] == first_sha, approvals
    again = s.cli("tools", "approve", "evil", "add")
    assert again.returncode == 1 and "nothing to approve" in again.stderr, again.stderr


def test_tools_commands_refuse_bad_input_naming_it(setup: Callable[[], Setup], tmp_path: Path) -> None:
    s = setup()
    no_server = s.cli("tools", "list", "nope")
    assert no_server.returncode == 2 and 'no tools of server "nope" are pinned' in no_server.stderr, no_server.stderr
    no_tool = s.cli("tools", "diff", "evil", "nope")
    assert no_tool.returncode == 2 and 'server "evil" has no tool "nope" on record' in no_tool.stderr, no_tool.stderr
    nothing = s.cli("tools", "approve", "evil")
    assert nothing.returncode == 2 and "name the tools to approve, or pass --all" in nothing.stderr, nothing.stderr
    two = s.cli("tools", "approve", "evil", "add", "weather", "--sha256", "ab")
    assert two.returncode == 2 and "--sha256 approves one tool" in two.stderr, two.stderr
    empty = subprocess.run([str(gateway_binary()), "tools", "list", "--data-dir", str(tmp_path)],
                           capture_output=True, text=True, timeout=60)
    assert empty.returncode == 2 and "there is no toolgate.db there" in empty.stderr, empty.stderr


def test_cluster_mode_pins_live_in_postgres_and_one_approval_serves_every_replica(procs: Procs,
                                                                                    tmp_path: Path) -> None:
    """Two replicas with `[store] postgres_url`: the tools pinned through one are the pins of
    both; a rug pull seen by both is recorded once; one approval with the CLI (which reaches
    PostgreSQL through the configuration) serves every replica; the admin chain verifies.
    The server's name is unique to this run: the database is shared with earlier runs."""
    server = f"evil-{secrets.token_hex(4)}"
    upstream = start_attack_server(procs, "evil", "--state", str(tmp_path / "state"), "--ran", str(tmp_path / "ran"),
                                   name="attack_evil-pins-cluster")
    config = f"""
[store]
postgres_url = "{SHARED_POSTGRES}"

[servers.{server}]
url = "{upstream}"

[[grants]]
name = "agent"
token = "{TOKEN}"
policies = {{ {server} = "allow.json" }}
"""
    replicas = [start_gateway_config(procs, tmp_path / f"replica{i}", config, policies={"allow.json": ALLOW_ALL},
                                     name=f"toolgate-pins-replica{i}") for i in range(2)]
    config_path = tmp_path / "replica0" / "toolgate.toml"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(gateway_binary()), *args, "--config", str(config_path)],
                              capture_output=True, text=True, timeout=60, cwd=tmp_path / "replica0")

    async def listed(gw: Gateway) -> set[str]:
        async with http_client(gw.server_url(server), TOKEN) as client:
            return {t.name for t in (await client.list_tools()).tools}

    async def call(gw: Gateway, tool: str, arguments: dict[str, Any]) -> Any:
        async with http_client(gw.server_url(server), TOKEN) as client:
            return await client.call_tool(tool, arguments)

    assert "add" in run(lambda: listed(replicas[0]))
    assert "add" in run(lambda: listed(replicas[1]))
    assert_allowed(run(lambda: call(replicas[0], "pull_the_rug", {})))
    for gw in replicas:
        assert "add" not in run(lambda gw=gw: listed(gw))
        refused = run(lambda gw=gw: call(gw, "add", {"a": 1, "b": 2}))
        assert_denied(refused, "(withheld: definition changed)", refused.content[0].text.removeprefix("[POLICY DENIED] "))

    pins = {p["tool"]: p for p in map(json.loads, cli("tools", "list", server, "--json").stdout.splitlines())}
    assert pins["add"]["status"] == "changed", pins
    approved = cli("tools", "approve", server, "add", "--sha256", pins["add"]["served_sha256"][:16])
    assert approved.returncode == 0, approved.stdout + approved.stderr
    for gw in replicas:
        assert "add" in run(lambda gw=gw: listed(gw))
        assert_allowed(run(lambda gw=gw: call(gw, "add", {"a": 1, "b": 2})))

    events = [e for e in map(json.loads, cli("audit", "query", "--admin", "--json").stdout.splitlines())
              if e["subject"] == f"{server}/add"]
    # (Flags depend on what else the shared database holds: earlier runs' servers also
    # serve an `add`, which is shadowing by name.)
    actions = [e["action"] for e in events if e["action"] != "tool_flagged"]
    assert actions == ["tool_pinned", "tool_changed", "tool_approved"], events
    # Nothing went to the replicas' embedded stores.
    for i in range(2):
        data = tmp_path / f"replica{i}" / f"toolgate-pins-replica{i}-data"
        local = subprocess.run([str(gateway_binary()), "tools", "list", "--json", "--data-dir", str(data)],
                               capture_output=True, text=True, timeout=60)
        assert server not in local.stdout, local.stdout
    verified = cli("audit", "verify", "--json")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    chains = [json.loads(line) for line in verified.stdout.splitlines()]
    assert any(c["chain"] == "admin@tools" and c["ok"] for c in chains), chains


def test_with_new_tools_withheld_nothing_is_served_before_an_operator_approves_it(procs: Procs,
                                                                                   tmp_path: Path) -> None:
    """`[catalogue] new_tools = "withhold"`: no trust on first use. A server's tools are
    recorded when first seen, withheld (listing and calls) until approved; approving one
    serves that one."""
    upstream = start_attack_server(procs, "evil", "--state", str(tmp_path / "state"), "--ran", str(tmp_path / "ran"),
                                   name="attack_evil-pins-new")
    config = evil_config(upstream, '[catalogue]\nnew_tools = "withhold"\n')
    gw = start_gateway_config(procs, tmp_path, config, policies={"allow.json": ALLOW_ALL}, name="toolgate-pins-new")
    data = tmp_path / "toolgate-pins-new-data"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(gateway_binary()), *args, "--data-dir", str(data)],
                              capture_output=True, text=True, timeout=60)

    async def listed() -> set[str]:
        async with http_client(gw.server_url("evil"), TOKEN) as client:
            return {t.name for t in (await client.list_tools()).tools}

    async def call() -> Any:
        async with http_client(gw.server_url("evil"), TOKEN) as client:
            return await client.call_tool("add", {"a": 1, "b": 2})

    assert run(listed) == set(), "nothing is served before an operator approves it"
    refused = run(call)
    message = refused.content[0].text.removeprefix("[POLICY DENIED] ")
    assert_denied(refused, "(withheld: not yet approved)", message)
    assert message.startswith('Tool "add" is new and withheld until an operator approves it'), message
    pins = {p["tool"]: p for p in map(json.loads, cli("tools", "list", "evil", "--json").stdout.splitlines())}
    assert pins["add"]["status"] == "new" and pins["add"]["sha256"] == "", pins["add"]
    assert pins["add"]["served_sha256"], pins["add"]
    diff = cli("tools", "diff", "evil", "add")
    assert diff.returncode == 0 and '+   "name": "add"' in diff.stdout, diff.stdout
    approved = cli("tools", "approve", "evil", "add")
    assert approved.returncode == 0, approved.stdout + approved.stderr
    assert run(listed) == {"add"}, "only what was approved is served"
    assert_allowed(run(call))
    bad = tmp_path / "bad.toml"
    bad.write_text('[catalogue]\nnew_tools = "trust"\n')
    refused_config = subprocess.run([str(gateway_binary()), "serve", "--config", str(bad), "--data-dir",
                                     str(tmp_path / "bad-data")], capture_output=True, text=True, timeout=30)
    assert refused_config.returncode == 2 and 'catalogue.new_tools: "trust" is not a choice' in refused_config.stderr
