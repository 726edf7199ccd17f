"""The web dashboard at `/admin` (issue 10), in a real headless Chromium driven by
playwright-core (tests/browser/dashboard.cjs), against a gateway serving an official
Python SDK client:

- a wrong admin token is refused on the page; the right one signs in;
- the live log shows a call made while the page is open, without a reload;
- the denial count of the server moves when a call is refused;
- a pending approval is approved with its button, and the agent's retry then runs;
- the servers page shows the tools with their risk, and the policies page decides a pasted
  call against a grant's policy.

The page itself carries no data and is served without a token, with a strict
Content-Security-Policy; with no admin tokens configured there is no dashboard.
"""

from __future__ import annotations

import hashlib
import os
import queue
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from e2e_helpers import (
    NODE_MODULES,
    REPO,
    Procs,
    assert_allowed,
    assert_denied,
    decision_of,
    http_client,
    run,
    start_gateway_config,
    start_py_upstream_http,
)

ADMIN = "tg-e2e-dashboard-admin-0123456789"
TOKEN = "tg-e2e-dashboard-grant-0123456789"
POLICY = {"version": "1", "default": "deny", "tools": {
    "echo": {},
    "delete_everything": {"action": "deny", "on_deny": "Nothing gets deleted."},
    "charge": {"action": "require_approval"},
}}
CHROMIUM = os.environ.get("TOOLGATE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


def call(url: str, tool: str, args: dict[str, Any]) -> Any:
    async def body() -> Any:
        async with http_client(url, TOKEN) as client:
            return await client.call_tool(tool, args)

    return run(body)


def test_dashboard_in_a_headless_browser(procs: Procs, tmp_path: Path) -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no Chromium at {CHROMIUM} (run .ci/setup, or set TOOLGATE_CHROMIUM)")
    upstream = start_py_upstream_http(procs, name="py_upstream-dashboard")[0]
    config = f"""
[gateway]

[servers.py]
url = "{upstream}"

[admin]
token_sha256 = "{hashlib.sha256(ADMIN.encode()).hexdigest()}"

[[grants]]
name = "dash"
token = "{TOKEN}"
policies = {{ py = "policy.json" }}
"""
    gw = start_gateway_config(procs, tmp_path, config, policies={"policy.json": POLICY}, name="toolgate-dashboard")
    url = gw.server_url("py")

    page = httpx.get(f"{gw.base}/admin", timeout=10)
    assert page.status_code == 200 and "<title>toolgate</title>" in page.text, page.text
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp, csp
    assert httpx.get(f"{gw.base}/admin/dashboard.js", timeout=10).headers["content-type"].startswith("text/javascript")

    # A call held for approval, waiting when the page opens.
    charge = {"amount": 5, "reason": "dashboard test"}
    held = call(url, "charge", charge)
    assert (decision_of(held) or {}).get("decision") == "approval_required", held

    env = {**os.environ, "NODE_PATH": str(NODE_MODULES), "TOOLGATE_CHROMIUM": CHROMIUM}
    browser = subprocess.Popen(["node", str(REPO / "tests" / "browser" / "dashboard.cjs"), gw.base, ADMIN],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=env)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line.rstrip("\n")) for line in browser.stdout], daemon=True).start()
    steps: dict[str, str] = {}
    try:
        while "done" not in steps:
            try:
                line = lines.get(timeout=60)
            except queue.Empty:
                pytest.fail(f"the browser script said nothing for 60 s; steps so far: {steps}")
            assert not line.startswith("FAIL"), f"{line}\nsteps so far: {steps}"
            assert line.startswith("STEP "), line
            name, _, value = line[5:].partition(" ")
            steps[name] = value
            if name == "calls-open":
                assert_allowed(call(url, "echo", {"text": "seen in the browser"}))
            elif name == "denials":
                assert_denied(call(url, "delete_everything", {}), "/tools/delete_everything/action",
                              "Nothing gets deleted.")
            else:
                continue
            browser.stdin.write("go\n")
            browser.stdin.flush()
    finally:
        browser.stdin.close()
        try:
            browser.wait(timeout=30)  # it closes the browser after its last step
        except subprocess.TimeoutExpired:
            browser.kill()
            browser.wait(timeout=10)
    assert browser.returncode == 0, browser.stderr.read()
    assert steps["signed-in"] == "admin (admin)", steps
    assert int(steps["denials-moved"]) == int(steps["denials"]) + 1, steps
    assert "deny" in steps["evaluated"] and "/tools/delete_everything/action" in steps["evaluated"], steps

    # Approved in the browser: the agent's retry of that exact call runs.
    approvals = httpx.get(f"{gw.base}/admin/api/approvals", headers={"Authorization": f"Bearer {ADMIN}"},
                          timeout=10).json()["approvals"]
    approved = next(a for a in approvals if a["id"] == steps["approved"])
    assert approved["status"] == "approved" and approved["decided_by"] == "admin-api:admin", approved
    assert approved["reason"] == "from the dashboard", approved
    assert_allowed(call(url, "charge", charge))


def test_no_admin_tokens_no_dashboard(procs: Procs, tmp_path: Path) -> None:
    upstream = start_py_upstream_http(procs, name="py_upstream-no-dashboard")[0]
    config = f"""
[gateway]

[servers.py]
url = "{upstream}"

[[grants]]
name = "dash"
token = "{TOKEN}"
policies = {{ py = "policy.json" }}
"""
    gw = start_gateway_config(procs, tmp_path, config, policies={"policy.json": POLICY},
                              name="toolgate-no-dashboard")
    r = httpx.get(f"{gw.base}/admin", timeout=10)
    assert r.status_code == 404 and "[admin]" in r.text, r.text
