"""Policies tested like code (issue 10; SPEC §2): `toolgate policy test POLICY CASES` and
`toolgate policy replay POLICY --since …` against a real gateway's audit log.

- `policy test` passes the example cases of the bundled example policy, and for a case that
  does not hold prints expected against actual per field and exits 1; a cases file with a
  mistake, and a broken policy, exit 2 naming what is wrong; YAML cases read as JSON ones;
- `policy replay` re-decides the calls an official Python SDK client made through the
  gateway: it prints each call the proposed policy would decide otherwise (old and new
  decision, rule), says "cannot tell" where the new decision reads argument values the log
  does not hold, and re-decides those too once the gateway captured arguments
  (`audit.capture = "full"`); `--since`/`--until`/`--grant` narrow what is replayed;
- progress: on a terminal `policy replay` draws a progress bar on stderr (and clears it);
  in a pipe it draws nothing.
"""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
from pathlib import Path
from typing import Any

from mcp import MCPError

from e2e_helpers import (
    EXAMPLES,
    Procs,
    gateway_binary,
    http_client,
    run,
    start_gateway_config,
    start_py_upstream_http,
)

TOKEN = "tg-e2e-policy-cli-token-0123456789"


def toolgate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(gateway_binary()), *args], capture_output=True, text=True, timeout=60)


def test_policy_test_runs_cases_and_shows_each_difference(tmp_path: Path) -> None:
    policy = EXAMPLES / "policies" / "sendit.json"
    done = toolgate("policy", "test", str(policy), str(EXAMPLES / "policies" / "sendit.cases.json"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[-1] == "20 cases: 20 passed, 0 failed", done.stdout

    cases = tmp_path / "cases.json"
    cases.write_text(json.dumps([
        {"name": "reads are allowed", "tool": "list_contacts", "expect": {"decision": "allow"}},
        {"name": "a wrong expectation", "tool": "send_message",
         "arguments": {"to": "mallory@evil.test", "body": "hi"},
         "expect": {"decision": "allow", "message": "fine"}},
    ]))
    done = toolgate("policy", "test", str(policy), str(cases))
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "ok    reads are allowed", lines
    assert lines[1].startswith("FAIL  a wrong expectation  (send_message "), lines
    assert lines[2:6] == [
        '        decision  expected "allow"',
        '                       got "deny"',
        '        message   expected "fine"',
        '                       got "SendIt may only message example.com addresses."',
    ], lines
    assert lines[-1] == "2 cases: 1 passed, 1 failed", lines

    cases.write_text(json.dumps([{"name": "typo", "tool": "x", "expect": {"decison": "deny"}}]))
    done = toolgate("policy", "test", str(policy), str(cases))
    assert done.returncode == 2 and "decison" in done.stderr and str(cases) in done.stderr, done.stderr

    broken = tmp_path / "broken.json"
    broken.write_text('{"version": "1", "default": "deny", "tools": {"x": {"action": "explode"}}}')
    done = toolgate("policy", "test", str(broken), str(EXAMPLES / "policies" / "sendit.cases.json"))
    assert done.returncode == 2 and "/tools/x/action" in done.stderr, done.stderr


def test_policy_test_reads_yaml_cases_as_it_reads_json(tmp_path: Path) -> None:
    """SPEC §2: CASES is JSON (or YAML). The same cases in YAML give the same report; what
    YAML can say and JSON cannot (a key twice, aliases) is refused with its line."""
    policy = EXAMPLES / "policies" / "sendit.json"
    cases = [
        {"name": "reads are allowed", "tool": "list_contacts", "expect": {"decision": "allow"}},
        {"name": "a wrong expectation", "tool": "send_message",
         "arguments": {"to": "mallory@evil.test", "body": "hi"},
         "expect": {"decision": "allow", "message": "fine"}},
    ]
    as_json = tmp_path / "cases.json"
    as_json.write_text(json.dumps({"cases": cases}))
    as_yaml = tmp_path / "cases.yaml"
    as_yaml.write_text("""# the same two cases
cases:
  - name: reads are allowed
    tool: list_contacts
    expect: {decision: allow}
  - name: a wrong expectation
    tool: send_message
    arguments:
      to: mallory@evil.test
      body: hi
    expect:
      decision: allow
      message: fine
""")
    from_json, from_yaml = toolgate("policy", "test", str(policy), str(as_json)), \
        toolgate("policy", "test", str(policy), str(as_yaml))
    assert (from_yaml.returncode, from_yaml.stdout) == (from_json.returncode, from_json.stdout), \
        (from_json.stdout, from_yaml.stdout + from_yaml.stderr)
    assert from_yaml.returncode == 1 and from_yaml.stdout.splitlines()[-1] == "2 cases: 1 passed, 1 failed"

    for text, says in [
        ("cases:\n  - name: a\n    tool: t\n    tool: u\n    expect: {decision: allow}\n",
         'line 4: the key "tool" is given twice'),
        ("base: &b {decision: allow}\ncases:\n  - {name: a, tool: t, expect: *b}\n", "line 3: aliases"),
        ("cases:\n  - {name: a, tool: t, expect: {decison: allow}}\n", "decison"),
    ]:
        bad = tmp_path / "bad.yml"
        bad.write_text(text)
        done = toolgate("policy", "test", str(policy), str(bad))
        assert done.returncode == 2 and says in done.stderr and str(bad) in done.stderr, (says, done.stderr)


RECORDED = {"version": "1", "default": "deny", "tools": {
    "echo": {}, "charge": {}, "delete_everything": {}}}
PROPOSED = {"version": "1", "default": "deny", "tools": {
    "echo": {}, "add": {},
    "delete_everything": {"action": "deny", "on_deny": "No."},
    "charge": {"deny_if": [{"path": "args.amount", "op": "gt", "value": 100, "on_deny": "too much"}]}}}


def make_calls(url: str) -> None:
    async def body() -> None:
        async with http_client(url, TOKEN) as client:
            await client.call_tool("echo", {"text": "a"})
            await client.call_tool("echo", {"text": "b"})
            await client.call_tool("charge", {"amount": 50, "reason": "small"})
            await client.call_tool("charge", {"amount": 500, "reason": "big"})
            await client.call_tool("delete_everything", {})
            await client.call_tool("add", {"a": 1, "b": 2})  # denied: not listed
            try:
                await client.call_tool("secret_admin", {})
            except MCPError:
                pass

    run(body)


def replay(data: Path, *extra: str) -> tuple[list[dict[str, Any]], str]:
    proposed = data.parent / "proposed.json"
    proposed.write_text(json.dumps(PROPOSED))
    done = toolgate("policy", "replay", str(proposed), "--data-dir", str(data), "--json", *extra)
    assert done.returncode == 0, done.stdout + done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()], done.stderr


def test_policy_replay_reports_what_would_change(procs: Procs, tmp_path: Path) -> None:
    upstream = start_py_upstream_http(procs, name="py_upstream-replay")[0]
    found: dict[str, list[dict[str, Any]]] = {}
    summaries = {
        "none": "7 recorded calls replayed: 2 would be decided otherwise, 2 cannot tell, 3 unchanged",
        "full": "7 recorded calls replayed: 3 would be decided otherwise, 0 cannot tell, 4 unchanged",
    }
    for capture in ("none", "full"):
        workdir = tmp_path / capture
        audit = '[audit]\ncapture = "full"\n' if capture == "full" else ""
        config = f"""
[gateway]

[servers.py]
url = "{upstream}"

{audit}
[[grants]]
name = "replayer"
token = "{TOKEN}"
policies = {{ py = "recorded.json" }}
"""
        gw = start_gateway_config(procs, workdir, config, policies={"recorded.json": RECORDED},
                                  name=f"toolgate-replay-{capture}")
        make_calls(gw.server_url("py"))
        gw.proc.stop()  # everything committed
        data = workdir / f"toolgate-replay-{capture}-data"
        lines, summary = replay(data, "--since", "1h")
        found[capture] = lines
        assert summaries[capture] in summary, summary
        # Narrowing: nothing before the calls, nothing for another grant.
        assert replay(data, "--until", "2000-01-01T00:00:00Z")[0] == []
        assert replay(data, "--grant", "someone-else")[0] == []

    def brief(lines: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
        return sorted((line["tool"], line["decision"], line["new_decision"], line["new_rule"], line["cannot_tell"])
                      for line in lines)

    # Without captured arguments the charges cannot be told; the rest can.
    assert brief(found["none"]) == [
        ("add", "deny", "allow", "", False),
        ("charge", "allow", None, "", True),
        ("charge", "allow", None, "", True),
        ("delete_everything", "allow", "deny", "/tools/delete_everything/action", False),
    ], found["none"]
    # With them, the big charge is refused and the small one unchanged.
    assert brief(found["full"]) == [
        ("add", "deny", "allow", "", False),
        ("charge", "allow", "deny", "/tools/charge/deny_if/args.amount-gt", False),
        ("delete_everything", "allow", "deny", "/tools/delete_everything/action", False),
    ], found["full"]
    assert all(line["grant"] == "replayer" and line["server"] == "py" and line["request_id"] for line in found["full"])


def test_replay_shows_progress_on_a_terminal_only(procs: Procs, tmp_path: Path) -> None:
    upstream = start_py_upstream_http(procs, name="py_upstream-progress")[0]
    config = f"""
[gateway]

[servers.py]
url = "{upstream}"

[[grants]]
name = "replayer"
token = "{TOKEN}"
policies = {{ py = "recorded.json" }}
"""
    gw = start_gateway_config(procs, tmp_path, config, policies={"recorded.json": RECORDED},
                              name="toolgate-progress")
    make_calls(gw.server_url("py"))
    gw.proc.stop()
    proposed = tmp_path / "proposed.json"
    proposed.write_text(json.dumps(PROPOSED))
    argv = [str(gateway_binary()), "policy", "replay", str(proposed), "--data-dir",
            str(tmp_path / "toolgate-progress-data")]

    # stderr on a terminal: the bar is drawn, then cleared before the summary.
    main, child = pty.openpty()
    done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=child, timeout=60)
    os.close(child)
    terminal = b""
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:
            break
        if not chunk:
            break
        terminal += chunk
    os.close(main)
    assert done.returncode == 0, terminal
    shown = terminal.decode(errors="replace")
    bar = re.search(r"replaying \[[#-]{30}\] \d+/(\d+)", shown)
    assert bar and int(bar.group(1)) >= 7, shown  # out of every record read (7 calls and more)
    assert "\r\x1b[2Ktoolgate: 7 recorded calls replayed" in shown[bar.end():], "cleared before the summary"

    # stderr in a pipe: only the summary.
    piped = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert piped.returncode == 0 and "\r" not in piped.stderr and "replaying" not in piped.stderr, piped.stderr
    assert piped.stderr.startswith("toolgate: 7 recorded calls replayed"), piped.stderr
