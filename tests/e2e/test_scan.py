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
import time
from pathlib import Path
from typing import Any

from e2e_helpers import (
    FIXTURES,
    PYTHON,
    Procs,
    everything_command,
    gateway_binary,
    sendit_binary,
    start_attack_server,
    start_py_upstream_http,
)

ODD_TOOLS = FIXTURES / "odd_tools_server.py"


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
    assert lines[0].split() == ["TOOL", "CATEGORY", "RISK", "FLAGS", "EVIDENCE"], lines[0]
    table = [line for line in lines[1:] if not line.startswith("flag: ")]
    summary = table.pop()
    tools = [line.split()[0] for line in table]
    assert {"filler_00", "filler_29", "echo", "delete_everything", "charge"} <= set(tools), tools
    assert len(tools) == len(set(tools)), "a page was listed twice"
    assert summary.startswith(f"{len(tools)} tools: ") and summary.endswith("; 0 flagged"), summary
    row = {line.split()[0]: line.split()[1:3] for line in table}
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
    assert lines[0] == "| tool | category | risk | flags | evidence |", lines[0]
    assert len(lines) == 2 + 11, "all 11 SendIt tools, over four pages"
    assert any(line.startswith("| `create_payment` | Financial | critical | - |") for line in lines), lines
    assert any(line.startswith("| `purge_all_messages` | Destructive | critical | - |") for line in lines), lines
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
    # A program that cannot start is reported at once, not after the 30 s timeout.
    started = time.monotonic()
    missing = toolgate("scan", "--", str(tmp_path / "no-such-program"))
    assert missing.returncode == 1 and "cannot list the tools of stdio" in missing.stderr, missing.stderr
    assert "cannot start" in missing.stderr and "no-such-program" in missing.stderr, missing.stderr
    assert time.monotonic() - started < 15, "a missing program must not wait out the timeout"
    exits = toolgate("scan", "--", PYTHON, "-c", "import sys; sys.exit(3)")
    assert exits.returncode == 1 and "exited before it answered" in exits.stderr, exits.stderr


def test_scan_reads_past_malformed_entries_and_huge_lists_and_reports_them() -> None:
    """Thousands of tools over three pages, a huge nested schema, entries that are not
    tools, a repeated name, a schema that is not an object: the rest is classified, each
    problem is named, and the exit status says the list was not clean."""
    done = toolgate("scan", "--json", "--", PYTHON, str(ODD_TOOLS))
    assert done.returncode == 1, done.stderr
    rows = json_lines(done.stdout)
    assert len(rows) == 2500 + 1, len(rows)
    assert rows["search_records"]["category"] == "Read", rows["search_records"]
    assert rows["get_record_0001"]["category"] == "Read", "the first of a repeated name is the one classified"
    assert rows["broken_schema"]["category"] == "Write", rows["broken_schema"]
    problems = [line for line in done.stderr.splitlines() if line.startswith("toolgate: could not read: ")]
    assert problems == [
        "toolgate: could not read: tool #2501 is not an object",
        "toolgate: could not read: tool #2502 has no name",
        'toolgate: could not read: tool #2503 repeats the name "get_record_0001"; only the first is classified',
        'toolgate: could not read: tool "broken_schema": its inputSchema is not an object (classified without it)',
    ], done.stderr


def test_scan_of_a_server_that_stops_answering_keeps_what_it_read(tmp_path: Path) -> None:
    policy = tmp_path / "policy.json"
    done = toolgate("scan", "--json", "--timeout", "3s", "--write-policy", str(policy), "--",
                    PYTHON, str(ODD_TOOLS), "--hang-on-page", "2")
    assert done.returncode == 1, done.stderr
    assert len(json_lines(done.stdout)) == 1000, "the first page is classified"
    assert "could not read: reading stopped after 1000 tools: " in done.stderr, done.stderr
    assert "did not answer" in done.stderr or "timed out" in done.stderr or "timeout" in done.stderr, done.stderr
    assert toolgate("policy", "check", str(policy)).returncode == 0
    assert len(json.loads(policy.read_text())["tools"]) == 1000
    # A page nested too deeply to parse safely is named as such, not just as a silence.
    deep = toolgate("scan", "--json", "--timeout", "3s", "--", PYTHON, str(ODD_TOOLS), "--depth", "100")
    assert deep.returncode == 1 and deep.stdout == "", deep.stdout[:200]
    assert "reading stopped after 0 tools" in deep.stderr and "recursion limit exceeded" in deep.stderr, deep.stderr


def test_scan_flags_poisoned_descriptions_and_shadowing(procs: Procs, tmp_path: Path) -> None:
    url = start_attack_server(procs, "evil", "--state", str(tmp_path / "state"), "--ran", str(tmp_path / "ran"))
    done = toolgate("scan", url, "--json")
    assert done.returncode == 0, done.stderr
    rows = json_lines(done.stdout)
    kinds = {name: {f["kind"] for f in row["flags"]} for name, row in rows.items()}
    assert {"hidden_directive", "invisible_unicode", "secret_access"} <= kinds["weather"], rows["weather"]
    assert kinds["add"] == set() and kinds["run_command"] == set(), kinds
    assert "tool_reference" in kinds["mail_helper"], rows["mail_helper"]
    table = toolgate("scan", url)
    assert "flag: weather invisible_unicode at description: " in table.stdout and "U+200B" in table.stdout, table.stdout
