"""Human approval, out of band (SPEC §6; issue 7 points 1, 3 and 4), with the official
Python SDK client against py_upstream.py:

- a held call is answered at once with `[APPROVAL REQUIRED]` and an approval id, and does
  not run; a retry while it is pending reuses the request;
- `toolgate approvals approve` (or the admin API) lets the identical retry run, once
  (`reuse: once`) or for a while (`reuse: "1m"`); other arguments need a new approval;
- a denial is told to the agent with the approver's reason; a request nobody decides
  expires; an approval whose call then fails upstream is given back;
- every request, decision, use, expiry and restoration is in the audit log;
- bad input: unknown, expired and already decided requests are refused by name.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import mcp.types as types
import pytest

from e2e_helpers import (
    PY_UPSTREAM,
    PYTHON,
    ClientCallbacks,
    Gateway,
    Procs,
    assert_allowed,
    assert_denied,
    decision_of,
    gateway_binary,
    http_client,
    ready_url,
    py_upstream_stdio_argv,
    run,
    start_gateway_config,
    start_gateway_quick,
    start_py_upstream_http,
    started_lazily,
)

TOKEN = "tg-e2e-approvals-0123456789abcdef"
WEBHOOK_SECRET = "whsec-e2e-approvals-0123456789"
SHARED_POSTGRES = os.environ.get("TOOLGATE_TEST_POSTGRES_URL", "postgres://toolgate@127.0.0.1:5432/toolgate")
WEBHOOK_RECEIVER = PY_UPSTREAM.parent / "webhook_receiver.py"
MANAGER = "tg-admin-approvals-manager-0123456789"
VIEWER = "tg-admin-approvals-viewer-0123456789"
POLICY: dict[str, Any] = {
    "version": "1",
    "default": "allow",
    "tools": {
        "record_run": {"action": "require_approval"},
        "charge": {"action": "require_approval", "approval": {"reuse": "1m"}},
        "jsonrpc_error": {"action": "require_approval"},
        "echo": {"action": "require_approval", "approval": {"timeout": "1s"}},
    },
}


def sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Setup:
    def __init__(self, procs: Procs, workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.ran = workdir / "ran"
        upstream, _ = start_py_upstream_http(procs, name="py_upstream-approvals", ran_file=self.ran)
        self.hooks = workdir / "hooks.jsonl"
        # The receiver refuses the first delivery (503): the gateway must retry.
        hook = procs.start("webhook_receiver", [PYTHON, str(WEBHOOK_RECEIVER), "--secret", WEBHOOK_SECRET,
                                                "--record", str(self.hooks), "--fail-first", "1"]).wait_for(ready_url)
        self.workdir = workdir
        self.config = workdir / "toolgate.toml"
        config = f"""
[gateway]
public_url = "https://gw.example"

[approvals]
webhook_url = "{hook}"
webhook_secret = "${{TG_E2E_WEBHOOK_SECRET}}"

[servers.py]
url = "{upstream}"

[[grants]]
name = "agent"
token = "{TOKEN}"
policies = {{ py = "policy.json" }}

[admin]
token_sha256 = "{sha("tg-admin-approvals-root-0123456789")}"

[[admin.members]]
name = "pat"
role = "policy_manager"
token_sha256 = "{sha(MANAGER)}"

[[admin.members]]
name = "vic"
role = "viewer"
token_sha256 = "{sha(VIEWER)}"
"""
        self.gateway: Gateway = start_gateway_config(procs, workdir, config, policies={"policy.json": POLICY},
                                                     env={"TG_E2E_WEBHOOK_SECRET": WEBHOOK_SECRET},
                                                     name="toolgate-approvals")
        self.data = workdir / "toolgate-approvals-data"

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(gateway_binary()), *args, "--data-dir", str(self.data)],
                              capture_output=True, text=True, timeout=60, cwd=self.workdir)

    def call(self, tool: str, arguments: dict[str, Any]) -> Any:
        async def body() -> Any:
            async with http_client(self.gateway.server_url("py"), TOKEN) as client:
                return await client.call_tool(tool, arguments)

        return run(body)

    def request(self, approval_id: str) -> dict[str, Any]:
        done = self.cli("approvals", "show", approval_id, "--json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def ran_lines(self) -> list[str]:
        return self.ran.read_text().splitlines() if self.ran.exists() else []

    def admin_events(self, approval_id: str) -> list[str]:
        done = self.cli("audit", "query", "--admin", "--json")
        assert done.returncode == 0, done.stderr
        return [e["action"] for e in map(json.loads, done.stdout.splitlines()) if e["subject"] == approval_id]


@pytest.fixture(scope="module")
def setup(module_procs: Procs, module_tmp: Path) -> Callable[[], Setup]:
    return started_lazily(lambda: Setup(module_procs, module_tmp / "approvals"))


def held(result: Any) -> str:
    """The approval id of an `[APPROVAL REQUIRED]` answer (SPEC §4), checked."""
    dump = result.model_dump(by_alias=True, exclude_none=True)
    assert result.is_error is True, dump
    decision = decision_of(result)
    assert decision is not None and decision["decision"] == "approval_required", dump
    approval_id = decision["approval_id"]
    assert approval_id.startswith("apr_"), dump
    assert result.content[0].text == (f"[APPROVAL REQUIRED] {decision['message']} "
                                      f"(approval {approval_id}; retry the same call once approved)"), dump
    return approval_id


def test_an_approved_call_runs_once_and_other_arguments_need_their_own_approval(setup: Callable[[], Setup]) -> None:
    s = setup()
    first = held(s.call("record_run", {"tag": "one"}))
    assert held(s.call("record_run", {"tag": "one"})) == first, "a retry while pending reuses the request"
    assert s.ran_lines() == [], "nothing runs before a human says yes"

    listed = [json.loads(line) for line in s.cli("approvals", "list", "--json").stdout.splitlines()]
    mine = next(r for r in listed if r["id"] == first)
    assert (mine["status"], mine["tool"], mine["server"], mine["grant"]) == ("pending", "record_run", "py", "agent")
    assert mine["arguments"] == {"tag": "one"}, "the approver sees the values"

    approved = s.cli("approvals", "approve", first, "--reason", "looks fine")
    assert approved.returncode == 0, approved.stderr
    assert approved.stdout.startswith(f"approved {first} (record_run on py)"), approved.stdout
    assert_allowed(s.call("record_run", {"tag": "one"}))
    assert s.ran_lines() == ["one"]
    # Once: the next identical call needs a new approval; other arguments too.
    second = held(s.call("record_run", {"tag": "one"}))
    assert second != first
    other = held(s.call("record_run", {"tag": "two"}))
    assert other not in (first, second)
    assert s.ran_lines() == ["one"]

    shown = s.request(first)
    assert (shown["status"], shown["uses"], shown["reason"]) == ("consumed", 1, "looks fine"), shown
    assert shown["decided_by"].startswith("cli"), shown
    assert s.admin_events(first) == ["approval_requested", "approval_approved", "approval_used"]
    done = s.cli("audit", "query", "--json", "--tool", "record_run")
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(r["decision"], r["approval_id"]) for r in records[:3]] == [
        ("approval_required", first), ("approval_required", first), ("allow", first)], records


def test_a_denial_is_told_once_with_the_reason(setup: Callable[[], Setup]) -> None:
    s = setup()
    request = held(s.call("record_run", {"tag": "denied"}))
    denied = s.cli("approvals", "deny", request, "--reason", "not today")
    assert denied.returncode == 0, denied.stderr
    result = s.call("record_run", {"tag": "denied"})
    message = result.content[0].text.removeprefix("[POLICY DENIED] ")
    assert message.startswith(f"Approval {request} was denied by cli") and message.endswith(": not today"), message
    assert_denied(result, "/tools/record_run/action", message)
    assert held(s.call("record_run", {"tag": "denied"})) != request, "asking again opens a new request"
    assert "denied" not in s.ran_lines()


def test_reuse_for_a_while_admits_identical_calls(setup: Callable[[], Setup]) -> None:
    s = setup()
    request = held(s.call("charge", {"amount": 5, "reason": "refill"}))
    assert s.cli("approvals", "approve", request).returncode == 0
    for _ in range(3):
        assert_allowed(s.call("charge", {"amount": 5, "reason": "refill"}))
    assert s.request(request)["uses"] == 3
    assert held(s.call("charge", {"amount": 6, "reason": "refill"})) != request


def test_an_approval_whose_call_failed_upstream_is_given_back(setup: Callable[[], Setup]) -> None:
    s = setup()
    request = held(s.call("jsonrpc_error", {"message": "boom"}))
    assert s.cli("approvals", "approve", request).returncode == 0

    async def failing() -> None:
        async with http_client(s.gateway.server_url("py"), TOKEN) as client:
            with pytest.raises(Exception, match="boom"):
                await client.call_tool("jsonrpc_error", {"message": "boom"})

    run(failing)
    shown = s.request(request)
    assert (shown["status"], shown["uses"]) == ("approved", 0), shown
    run(failing)  # the approval still admits the identical call
    assert s.admin_events(request) == ["approval_requested", "approval_approved", "approval_used",
                                       "approval_restored", "approval_used", "approval_restored"]


def test_a_request_nobody_decides_expires(setup: Callable[[], Setup]) -> None:
    s = setup()
    request = held(s.call("echo", {"text": "late"}))
    time.sleep(1.3)
    late = s.cli("approvals", "approve", request)
    assert late.returncode == 1 and f"approval request {request} expired before anyone decided it" in late.stderr, late
    assert s.request(request)["status"] == "expired"
    assert held(s.call("echo", {"text": "late"})) != request
    assert "approval_expired" in s.admin_events(request)


def test_bad_decisions_are_refused_naming_what_is_wrong(setup: Callable[[], Setup]) -> None:
    s = setup()
    unknown = s.cli("approvals", "approve", "apr_000000000000000000000000")
    assert unknown.returncode == 1 and 'no approval request has the id "apr_000000000000000000000000"' in unknown.stderr
    request = held(s.call("record_run", {"tag": "twice"}))
    assert s.cli("approvals", "deny", request).returncode == 0
    again = s.cli("approvals", "approve", request)
    assert again.returncode == 1 and f"approval request {request} is already denied (by cli" in again.stderr, again
    missing = subprocess.run([str(gateway_binary()), "approvals", "list", "--data-dir", str(s.workdir / "nowhere")],
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "there is no toolgate.db there" in missing.stderr, missing.stderr


def test_the_admin_api_lists_and_decides_by_role(setup: Callable[[], Setup]) -> None:
    s = setup()
    request = held(s.call("record_run", {"tag": "api"}))
    api = f"{s.gateway.base}/admin/api"

    def post(token: str, verdict: str, body: dict[str, Any] | None = None) -> httpx.Response:
        return httpx.post(f"{api}/approvals/{request}/{verdict}", json=body,
                          headers={"Authorization": f"Bearer {token}"}, timeout=30)

    listed = httpx.get(f"{api}/approvals?status=pending", headers={"Authorization": f"Bearer {VIEWER}"}, timeout=30)
    assert listed.status_code == 200, listed.text
    assert request in {r["id"] for r in listed.json()["approvals"]}
    refused = post(VIEWER, "approve")
    assert refused.status_code == 403 and "needs the policy_manager role" in refused.text, refused.text
    approved = post(MANAGER, "approve", {"reason": "ok by pat"})
    assert approved.status_code == 200, approved.text
    assert (approved.json()["status"], approved.json()["decided_by"]) == ("approved", "admin-api:pat")
    conflict = post(MANAGER, "deny")
    assert conflict.status_code == 409 and "already approved" in conflict.text, conflict.text
    missing = httpx.post(f"{api}/approvals/apr_nope/approve", headers={"Authorization": f"Bearer {MANAGER}"}, timeout=30)
    assert missing.status_code == 404, missing.text
    assert_allowed(s.call("record_run", {"tag": "api"}))
    assert "api" in s.ran_lines()


def test_the_webhook_announces_each_new_request_signed(setup: Callable[[], Setup]) -> None:
    s = setup()
    request = held(s.call("record_run", {"tag": "hooked"}))
    assert held(s.call("record_run", {"tag": "hooked"})) == request
    deadline = time.monotonic() + 10
    announced: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        lines = s.hooks.read_text().splitlines() if s.hooks.exists() else []
        announced = [h for h in map(json.loads, lines) if h["body"] and h["body"]["id"] == request]
        if announced:
            break
        time.sleep(0.1)
    assert len(announced) == 1, "one announcement per new request (a retry while pending is not new)"
    hook = announced[0]
    assert hook["valid"] is True and hook["event"] == "approval_requested", hook
    body = hook["body"]
    assert (body["tool"], body["server"], body["grant"], body["status"]) == ("record_run", "py", "agent", "pending")
    assert body["arguments"] == {"tag": "hooked"}
    assert body["approve_url"] == f"https://gw.example/admin/api/approvals/{request}/approve", body


def test_a_webhook_that_is_down_costs_only_the_announcement(procs: Procs, tmp_path: Path) -> None:
    upstream, _ = start_py_upstream_http(procs, name="py_upstream-approvals-down", ran_file=tmp_path / "ran")
    config = f"""
[approvals]
webhook_url = "http://127.0.0.1:9/hook"
webhook_secret = "{WEBHOOK_SECRET}"

[servers.py]
url = "{upstream}"

[[grants]]
name = "agent"
token = "{TOKEN}"
policies = {{ py = "policy.json" }}
"""
    gw = start_gateway_config(procs, tmp_path, config, policies={"policy.json": POLICY}, name="toolgate-approvals-down")

    async def call() -> Any:
        async with http_client(gw.server_url("py"), TOKEN) as client:
            return await client.call_tool("record_run", {"tag": "down"})

    request = held(run(call))
    done = subprocess.run([str(gateway_binary()), "approvals", "approve", request, "--data-dir",
                           str(tmp_path / "toolgate-approvals-down-data")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert_allowed(run(call))
    deadline = time.monotonic() + 15
    while "approval webhook failed" not in gw.proc.stderr() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "approval webhook failed" in gw.proc.stderr() and request in gw.proc.stderr(), gw.proc.stderr()[-2000:]


def test_a_webhook_without_a_secret_is_refused_at_start(tmp_path: Path) -> None:
    config = tmp_path / "toolgate.toml"
    config.write_text('[approvals]\nwebhook_url = "https://hooks.example/x"\n')
    done = subprocess.run([str(gateway_binary()), "serve", "--config", str(config), "--data-dir", str(tmp_path / "d")],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2, done.stderr
    assert "approvals.webhook_secret: a webhook needs a secret to sign its requests" in done.stderr, done.stderr


def test_cluster_mode_an_approval_given_through_one_replica_is_honoured_by_another(procs: Procs,
                                                                                   tmp_path: Path) -> None:
    """Two replicas with `[store] postgres_url`: a call held through replica 0, approved with
    the CLI (which reaches PostgreSQL through the configuration), runs when retried through
    replica 1 — once; the decision is in the shared admin stream and its chain verifies."""
    ran = tmp_path / "ran"
    upstream, _ = start_py_upstream_http(procs, name="py_upstream-approvals-cluster", ran_file=ran)
    tag = f"cluster-{time.time_ns()}"
    config = f"""
[store]
postgres_url = "{SHARED_POSTGRES}"

[servers.py]
url = "{upstream}"

[[grants]]
name = "agent"
token = "{TOKEN}"
policies = {{ py = "policy.json" }}
"""
    replicas = [start_gateway_config(procs, tmp_path / f"replica{i}", config, policies={"policy.json": POLICY},
                                     name=f"toolgate-approvals-replica{i}") for i in range(2)]
    config_path = tmp_path / "replica0" / "toolgate.toml"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(gateway_binary()), *args, "--config", str(config_path)],
                              capture_output=True, text=True, timeout=60, cwd=tmp_path / "replica0")

    def call(gw: Gateway) -> Any:
        async def body() -> Any:
            async with http_client(gw.server_url("py"), TOKEN) as client:
                return await client.call_tool("record_run", {"tag": tag})

        return run(body)

    request = held(call(replicas[0]))
    assert held(call(replicas[1])) == request, "the pending request is shared"
    pending = [json.loads(line) for line in cli("approvals", "list", "--json").stdout.splitlines()]
    assert request in {r["id"] for r in pending}, pending
    approved = cli("approvals", "approve", request)
    assert approved.returncode == 0, approved.stderr
    assert_allowed(call(replicas[1]))
    assert ran.read_text().splitlines() == [tag]
    assert held(call(replicas[0])) != request, "used once, on any replica"
    events = [e["action"] for e in map(json.loads, cli("audit", "query", "--admin", "--json").stdout.splitlines())
              if e["subject"] == request]
    assert events == ["approval_requested", "approval_approved", "approval_used"], events
    verified = cli("audit", "verify", "--json")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    chains = [json.loads(line) for line in verified.stdout.splitlines()]
    assert any(c["chain"] == "admin@approvals" and c["ok"] for c in chains), chains


def call_with(s: Setup, tool: str, arguments: dict[str, Any], **client_kwargs: Any) -> Any:
    async def body() -> Any:
        async with http_client(s.gateway.server_url("py"), TOKEN, **client_kwargs) as client:
            return await client.call_tool(tool, arguments)

    return run(body)


@pytest.mark.parametrize("action", ["accept", "decline", "cancel"])
def test_a_client_with_elicitation_is_asked_in_band(setup: Callable[[], Setup], action: str) -> None:
    s = setup()
    tag = f"in-band-{action}"
    asked = ClientCallbacks(elicit_content={"approve": True}, sampling_model="m", sampling_text="t",
                            elicit_action=action)
    result = call_with(s, "record_run", {"tag": tag}, **asked.kwargs())
    assert len(asked.elicitations) == 1, "the human is asked once, on the call's own stream"
    question = asked.elicitations[0].message
    assert "Server: py" in question and "Tool: record_run" in question and f'"tag": "{tag}"' in question, question
    done = s.cli("approvals", "list", "--all", "--json")
    request = next(r for r in map(json.loads, done.stdout.splitlines()) if r["arguments"] == {"tag": tag})
    assert request["decided_by"] == "elicitation:agent", request
    if action == "accept":
        assert_allowed(result)
        assert tag in s.ran_lines()
        assert request["status"] == "consumed", request
        assert s.admin_events(request["id"]) == ["approval_requested", "approval_approved", "approval_used"]
    else:
        message = result.content[0].text.removeprefix("[POLICY DENIED] ")
        why = "declined by the approver" if action == "decline" else "cancelled by the approver"
        assert message == f"Approval {request['id']} was denied by elicitation:agent: {why}", message
        assert_denied(result, "/tools/record_run/action", message)
        assert tag not in s.ran_lines()
        assert request["status"] == "denied", request


def test_an_approver_who_does_not_answer_in_time_refuses_the_call(setup: Callable[[], Setup]) -> None:
    s = setup()

    async def too_slow(ctx: Any, params: Any) -> Any:
        await anyio.sleep(2.5)
        return types.ElicitResult(action="accept", content={"approve": True})

    result = call_with(s, "echo", {"text": "slow approver"}, elicitation_callback=too_slow)
    message = result.content[0].text.removeprefix("[POLICY DENIED] ")
    assert message.startswith("Approval apr_") and message.endswith(
        "was not given: the approver did not answer in time"), message
    assert_denied(result, "/tools/echo/action", message)


@pytest.mark.parametrize("action", ["accept", "decline"])
def test_in_band_approval_in_front_of_a_stdio_upstream(procs: Procs, tmp_path: Path, action: str) -> None:
    """The same question on a stdio child (py_upstream.py over stdio, shared by the
    gateway's sessions): accepted, the call runs; declined, it is refused."""
    ran = tmp_path / "ran"
    gw = start_gateway_quick(procs, tmp_path, POLICY, command=py_upstream_stdio_argv(),
                             env={"PY_UPSTREAM_RAN_FILE": str(ran)}, name=f"toolgate-approvals-stdio-{action}")
    asked = ClientCallbacks(elicit_content={"approve": True}, sampling_model="m", sampling_text="t",
                            elicit_action=action)

    async def body() -> Any:
        async with http_client(gw.url, gw.token, **asked.kwargs()) as client:
            return await client.call_tool("record_run", {"tag": f"stdio-{action}"})

    result = run(body)
    assert len(asked.elicitations) == 1 and "Tool: record_run" in asked.elicitations[0].message
    if action == "accept":
        assert_allowed(result)
        assert ran.read_text().splitlines() == ["stdio-accept"]
    else:
        message = result.content[0].text.removeprefix("[POLICY DENIED] ")
        assert message.endswith("was denied by elicitation:quick: declined by the approver"), message
        assert not ran.exists() or ran.read_text() == ""
