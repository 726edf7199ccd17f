"""`toolgate install` (issue 11; SPEC §2) round-trips the configuration files real clients
write (kept as fixtures in tests/fixtures/clients): Claude Desktop, Cursor, VS Code and
Claude Code.

For each: `--list` says which entries are not yet protected; without `--write` the new
configuration is printed and the file left alone; with it the file is backed up to
`<file>.bak` and only the chosen entry changes — it keeps its name, `type` and `env` and
runs `toolgate stdio --policy FILE -- <original command and args>`; `--list` then says
protected, and a second install changes nothing. The routed entry is then launched as the
client would launch it (its command, args and env) with the official Python SDK's stdio
client, and the policy holds. Default file locations, remote entries, unknown names, broken
policies and JSON with comments are handled with clear errors.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from e2e_helpers import (
    FIXTURES,
    PY_UPSTREAM,
    PYTHON,
    assert_allowed,
    assert_denied,
    gateway_binary,
    run,
    stdio_client,
)

POLICY = {"version": "1", "default": "deny", "tools": {
    "echo": {}, "record_run": {},
    "charge": {"deny_if": [{"path": "args.amount", "op": "gt", "value": 100, "on_deny": "too much"}]}}}

CLIENTS = {
    "claude-desktop": ("claude_desktop_config.json", "mcpServers"),
    "cursor": ("cursor-mcp.json", "mcpServers"),
    "vscode": ("vscode-mcp.json", "servers"),
    "claude-code": ("claude-code-mcp.json", "mcpServers"),
}


def toolgate(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(gateway_binary()), *args], capture_output=True, text=True, timeout=60,
                          cwd=cwd, env={**os.environ, **(env or {})})


def fixture(client: str, target: Path, ran: Path) -> Path:
    text = (FIXTURES / "clients" / CLIENTS[client][0]).read_text()
    text = text.replace("@PYTHON@", PYTHON).replace("@PY_UPSTREAM@", str(PY_UPSTREAM)).replace("@RAN@", str(ran))
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    return target


def listed(client: str, path: Path) -> dict[str, bool]:
    done = toolgate("install", "--client", client, "--list", "--json", "--client-config", str(path))
    assert done.returncode == 0, done.stderr
    return {e["server"]: e["protected"] for e in map(json.loads, done.stdout.splitlines())}


@pytest.mark.parametrize("client", list(CLIENTS))
def test_install_round_trips_the_clients_configuration(client: str, tmp_path: Path) -> None:
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps(POLICY))
    ran = tmp_path / "ran"
    path = fixture(client, tmp_path / "client" / CLIENTS[client][0], ran)
    original_text = path.read_text()
    original = json.loads(original_text)
    key = CLIENTS[client][1]
    others = [name for name in original[key] if name != "fixture"]
    assert listed(client, path) == {name: False for name in original[key]}

    install = ["install", "--client", client, "--server", "fixture", "--policy", str(policy),
               "--client-config", str(path)]
    printed = toolgate(*install)
    assert printed.returncode == 0, printed.stderr
    assert path.read_text() == original_text, "install without --write changed the file"
    proposed = json.loads(printed.stdout)

    written = toolgate(*install, "--write")
    assert written.returncode == 0, written.stderr
    assert Path(f"{path}.bak").read_text() == original_text
    updated = json.loads(path.read_text())
    assert updated == proposed
    # Only the chosen entry changed, and it kept everything but command and args.
    assert {k: v for k, v in updated.items() if k != key} == {k: v for k, v in original.items() if k != key}
    assert {n: updated[key][n] for n in others} == {n: original[key][n] for n in others}
    entry, before = updated[key]["fixture"], original[key]["fixture"]
    assert {k: v for k, v in entry.items() if k not in ("command", "args")} == \
        {k: v for k, v in before.items() if k not in ("command", "args")}
    assert Path(entry["command"]) == gateway_binary().resolve()
    assert entry["args"] == ["stdio", "--policy", str(policy.resolve()), "--", before["command"], *before["args"]]
    assert listed(client, path) == {**{name: False for name in others}, "fixture": True}

    again = toolgate(*install, "--write")
    assert again.returncode == 0 and "already runs through toolgate" in again.stderr, again.stderr
    assert json.loads(path.read_text()) == updated

    # Launched as the client launches it: the policy holds.
    env = {k: v.replace("${input:api-key}", "key") for k, v in entry.get("env", {}).items()}

    async def body() -> None:
        async with stdio_client([entry["command"], *entry["args"]],
                                env={**env, "XDG_DATA_HOME": str(tmp_path / "xdg-data")}) as session:
            assert_allowed(await session.call_tool("record_run", {"tag": client}))
            assert_denied(await session.call_tool("charge", {"amount": 500, "reason": "r"}),
                          "/tools/charge/deny_if/args.amount-gt", "too much")

    run(body, timeout=60)
    assert ran.read_text().split() == [client]
    assert (tmp_path / "xdg-data" / "toolgate" / "toolgate.db").is_file()


def test_install_finds_default_files_and_refuses_what_it_cannot_route(tmp_path: Path) -> None:
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps(POLICY))
    ran = tmp_path / "ran"
    # Claude Desktop's file under XDG_CONFIG_HOME; Claude Code's in the working directory.
    desktop = fixture("claude-desktop", tmp_path / "xdg" / "Claude" / "claude_desktop_config.json", ran)
    done = toolgate("install", "--client", "claude-desktop", "--list", env={"XDG_CONFIG_HOME": str(tmp_path / "xdg")})
    assert done.returncode == 0 and "fixture" in done.stdout and "not protected" in done.stdout, done
    project = tmp_path / "project"
    code = fixture("claude-code", project / ".mcp.json", ran)
    done = toolgate("install", "--client", "claude-code", "--server", "fixture", "--policy", str(policy), "--write",
                    cwd=project)
    assert done.returncode == 0, done.stderr
    assert json.loads(code.read_text())["mcpServers"]["fixture"]["args"][0] == "stdio"
    assert desktop.exists()

    cursor = fixture("cursor", tmp_path / "cursor.json", ran)
    cases = [
        (["--server", "remote-docs", "--policy", str(policy)], "remote (url) server"),
        (["--server", "nope", "--policy", str(policy)], 'no server entry named "nope" (entries: fixture, remote-docs)'),
        (["--server", "fixture", "--policy", str(tmp_path / "missing.json")], "missing.json"),
    ]
    broken = tmp_path / "broken.json"
    broken.write_text('{"version": "1", "default": "perhaps"}')
    cases.append((["--server", "fixture", "--policy", str(broken)], "not a valid policy"))
    before = cursor.read_text()
    for extra, says in cases:
        done = toolgate("install", "--client", "cursor", "--client-config", str(cursor), "--write", *extra)
        assert done.returncode == 2 and says in done.stderr, (extra, done.stderr)
    assert cursor.read_text() == before and not Path(f"{cursor}.bak").exists()

    jsonc = tmp_path / "mcp.json"
    jsonc.write_text('{\n  // my servers\n  "servers": {}\n}\n')
    done = toolgate("install", "--client", "vscode", "--client-config", str(jsonc), "--list")
    assert done.returncode == 2 and "not plain JSON" in done.stderr, done.stderr
