"""`toolgate scan` (SPEC §10; issue 6 point 1) against real servers: the official
everything server over stdio, py_upstream.py over Streamable HTTP (paginated), and SendIt as
a configured server with a small page size.

- every tool is listed (all pages) and classified with its evidence, as a table, JSON lines
  or Markdown;
- `--write-policy` writes a starter policy that `toolgate policy check` accepts and that
  follows the SPEC §10 table;
- bad targets are refused naming what is wrong.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from e2e_helpers import Procs, everything_command, gateway_binary, sendit_binary, start_py_upstream_http


def toolgate(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(gateway_binary()), *args], capture_output=True, text=True, timeout=120, cwd=cwd)


def json_lines(text: str) -> dict[str, dict[str, Any]]:
    return {row["tool"]: row for row in map(json.loads, text.splitlines())}


def test_scan_of_a_stdio_server_classifies_every_tool_and_writes_a_policy_that_checks(tmp_path: Path) -> None:
    policy_path = tmp_path / "everything.json"
    done = toolgate("scan", "--json", "--write-policy", str(policy_path), "--", *everything_command("stdio"))
    assert done.returncode == 0, done.stderr
    rows = json_lines(done.stdout)
    assert len(rows) >= 10 and "echo" in rows, rows.keys()
    assert (rows["echo"]["category"], rows["echo"]["risk"]) == ("Read", "low"), rows["echo"]
    gzip = rows["gzip-file-as-resource"]
    assert gzip["category"] == "Execute" and any("URL" in e for e in gzip["evidence"]), gzip
    assert all(row["evidence"] for row in rows.values())

    checked = toolgate("policy", "check", str(policy_path))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    policy = json.loads(policy_path.read_text())
    assert policy["default"] == "deny"
    assert policy["tools"]["echo"] == {}
    assert policy["tools"]["toggle-simulated-logging"]["limits"][0]["max"] == 30
    assert policy["tools"]["gzip-file-as-resource"]["limits"][0]["max"] == 10
    assert policy["tools"]["gzip-file-as-resource"]["schema"]["properties"]["data"]["format"] == "uri"
    covered = set(policy["tools"]) | set(policy["hide"])
    assert covered == set(rows), "the starter policy must cover every tool"


def test_scan_of_a_url_follows_pagination_and_prints_a_table(procs: Procs) -> None:
    url, _ = start_py_upstream_http(procs, name="py_upstream-scan")
    done = toolgate("scan", url)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["TOOL", "CATEGORY", "RISK", "EVIDENCE"], lines[0]
    tools = [line.split()[0] for line in lines[1:-1]]
    assert {"filler_00", "filler_29", "echo", "delete_everything", "charge"} <= set(tools), tools
    assert len(tools) == len(set(tools)), "a page was listed twice"
    assert lines[-1].startswith(f"{len(tools)} tools: "), lines[-1]
    row = {line.split()[0]: line.split()[1:3] for line in lines[1:-1]}
    assert row["delete_everything"] == ["Destructive", "critical"], row["delete_everything"]
    assert row["charge"] == ["Financial", "critical"], row["charge"]


def test_scan_of_a_configured_server_in_markdown_and_its_policy(tmp_path: Path) -> None:
    (tmp_path / "toolgate.toml").write_text(f"""
[servers.sendit]
command = "{sendit_binary()}"
env = {{ SENDIT_PAGE_SIZE = "3" }}
""")
    policy_path = tmp_path / "sendit.json"
    done = toolgate("scan", "sendit", "--markdown", "--write-policy", str(policy_path), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "| tool | category | risk | evidence |", lines[0]
    assert len(lines) == 2 + 11, "all 11 SendIt tools, over four pages"
    assert any(line.startswith("| `create_payment` | Financial | critical |") for line in lines), lines
    assert any(line.startswith("| `purge_all_messages` | Destructive | critical |") for line in lines), lines
    assert toolgate("policy", "check", str(policy_path)).returncode == 0
    policy = json.loads(policy_path.read_text())
    assert policy["tools"]["create_payment"] == {"action": "require_approval"}
    assert set(policy["hide"]) == {"delete_contact", "purge_all_messages"}
    assert policy["tools"]["run_report"]["schema"]["required"] == ["query"], policy["tools"]["run_report"]


def test_bad_targets_are_refused_naming_what_is_wrong(tmp_path: Path) -> None:
    (tmp_path / "toolgate.toml").write_text('[servers.files]\nurl = "http://127.0.0.1:9/mcp"\n')
    unknown = toolgate("scan", "nowhere", cwd=tmp_path)
    assert unknown.returncode == 2 and 'no server named "nowhere"' in unknown.stderr and "files" in unknown.stderr
    unreachable = toolgate("scan", "files", "--timeout", "2s", cwd=tmp_path)
    assert unreachable.returncode == 1 and "cannot list the tools of files" in unreachable.stderr, unreachable.stderr
    nothing = toolgate("scan", cwd=tmp_path)
    assert nothing.returncode == 2 and "say what to scan" in nothing.stderr, nothing.stderr
    missing = toolgate("scan", "--timeout", "3s", "--", str(tmp_path / "no-such-program"))
    assert missing.returncode == 1 and "cannot list the tools of stdio" in missing.stderr, missing.stderr
