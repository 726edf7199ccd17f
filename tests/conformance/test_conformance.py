"""The official MCP conformance suite's server scenarios, run against the fixture
server directly and through toolgate; every scenario must get the same verdict.

    /root/.cache/toolgate-ci/venv/bin/python -m pytest tests/conformance -v

test_direct_all_scenarios_pass   every server scenario of the installed suite
                                 (`--suite all`, pending ones included) passes
                                 against fixture_server.py
test_gateway_matches_direct      the same run through `toolgate serve` (quick mode,
                                 allow-all policy) gives every scenario the same
                                 verdict, and each non-INFO check the same status.
                                 Needs the binary: $TOOLGATE_BIN, default
                                 ${CARGO_TARGET_DIR:-target}/debug/toolgate; a
                                 missing binary FAILS the test.

Environment:
  TOOLGATE_BIN               gateway binary
  CONFORMANCE_RESULTS_DIR    also copy direct.json / gateway.json here (CI artifacts)
  CONFORMANCE_COMPARE        "checks" (default: verdicts and non-INFO check statuses
                             must match) or "verdict" (verdicts only)
  MCP_CONFORMANCE_CMD, TOOLGATE_CI_NODE_MODULES   which conformance CLI (run_conformance.py)
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))
if str(REPO / "tests") not in sys.path:
    sys.path.insert(0, str(REPO / "tests"))

import run_conformance  # noqa: E402
from support.procs import Proc, cargo_binary, free_port, quick_announcement, ready_url, wait_tcp  # noqa: E402

ALLOW_ALL_POLICY = {"version": "1", "default": "allow"}
STARTUP_TIMEOUT = 60.0  # seconds for a process to announce itself
SUITE_TIMEOUT = 280.0  # seconds for one whole conformance run


# ------------------------------------------------------------------ helpers
def save_artifact(doc: dict[str, Any], name: str) -> None:
    dest = os.environ.get("CONFORMANCE_RESULTS_DIR")
    if dest:
        Path(dest).mkdir(parents=True, exist_ok=True)
        (Path(dest) / name).write_text(json.dumps(doc, indent=2) + "\n")


def describe_failures(doc: dict[str, Any], names: list[str]) -> str:
    lines = []
    for name in names:
        res = doc["scenarios"][name]
        lines.append(f"- {name}: {res['verdict']}" + (f" ({res['error']})" if res.get("error") else ""))
        for check in res.get("checks", []):
            if check.get("status") == "FAILURE":
                lines.append(f"    FAILURE {check.get('id')}: {check.get('errorMessage') or check.get('description')}")
        if res["verdict"] in ("error", "timeout") and res.get("output_tail"):
            lines.append("    " + res["output_tail"][-1500:].replace("\n", "\n    "))
    return "\n".join(lines)


def status_profile(res: dict[str, Any]) -> Counter:
    """(check id, status) pairs of the scenario's non-INFO checks (INFO checks are the
    suite's request/response log, whose number may legitimately vary)."""
    return Counter((c.get("id"), c.get("status")) for c in res.get("checks", []) if c.get("status") != "INFO")


# ----------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def logdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("conformance")


@pytest.fixture(scope="session")
def suite_scenarios() -> list[str]:
    """The server scenarios the installed suite lists (`conformance list --server`)."""
    try:
        cli, env = run_conformance.conformance_command()
        return run_conformance.list_server_scenarios(cli, env)
    except (run_conformance.SetupError, OSError, subprocess.SubprocessError) as exc:
        pytest.fail(f"the MCP conformance suite cannot be run: {exc}")


@pytest.fixture(scope="session")
def upstream(logdir: Path) -> Iterator[str]:
    """fixture_server.py on a free port; yields its /mcp URL."""
    proc = Proc("fixture-server", [sys.executable, str(HERE / "fixture_server.py"), "--port", "0"], logdir)
    try:
        yield proc.wait_for(ready_url, timeout=30)
    finally:
        proc.stop()


@pytest.fixture(scope="session")
def direct_results(upstream: str, logdir: Path, suite_scenarios: list[str]) -> dict[str, Any]:
    started = time.monotonic()
    doc = run_conformance.run_suite(upstream, out=logdir / "direct.json", timeout=SUITE_TIMEOUT,
                                    workdir=logdir / "direct-raw")
    print(f"\ndirect conformance run: {doc['summary']} in {time.monotonic() - started:.1f}s "
          f"(suite {doc['suite']['version']}); results {logdir / 'direct.json'}")
    save_artifact(doc, "direct.json")
    return doc


@contextlib.contextmanager
def running_gateway(upstream: str, workdir: Path) -> Iterator[tuple[str, str]]:
    """`toolgate serve` in quick mode in front of the fixture; yields (url, token).

    Called from the test body (not a fixture) so that a missing binary or a gateway
    that does not start is a test FAILURE, never an error or a skip."""
    binary = cargo_binary("toolgate", "TOOLGATE_BIN", "toolgate", "the gateway conformance comparison")
    policy = workdir / "policy.json"
    policy.write_text(json.dumps(ALLOW_ALL_POLICY))
    argv = [str(binary), "serve", "--policy", str(policy), "--upstream", upstream,
            "--listen", f"127.0.0.1:{free_port()}"]
    # cwd = a scratch directory: quick mode may create its data dir there.
    proc = Proc("toolgate", argv, workdir, cwd=workdir)
    try:
        url, token = proc.wait_for(quick_announcement, timeout=STARTUP_TIMEOUT)
        wait_tcp(url, proc, timeout=15.0)
        yield url, token
    finally:
        proc.stop()
        print(f"\ntoolgate logs: {proc.stdout_path}, {proc.stderr_path}")


# -------------------------------------------------------------------- tests
def test_direct_all_scenarios_pass(direct_results: dict[str, Any], suite_scenarios: list[str]) -> None:
    scenarios = direct_results["scenarios"]
    assert list(scenarios) == suite_scenarios, "every server scenario of the suite must be run (skip nothing)"
    failing = [name for name, res in scenarios.items() if res["verdict"] != "pass"]
    assert not failing, (
        f"{len(failing)} of {len(scenarios)} conformance scenarios do not pass against fixture_server.py "
        f"directly:\n{describe_failures(direct_results, failing)}"
    )
    assert direct_results["duration_s"] < 240, f"direct run took {direct_results['duration_s']}s"


def test_gateway_matches_direct(direct_results: dict[str, Any], upstream: str, tmp_path: Path) -> None:
    with running_gateway(upstream, tmp_path) as (url, token):
        via = run_conformance.run_suite(url, bearer=token, out=tmp_path / "gateway.json", timeout=SUITE_TIMEOUT,
                                        workdir=tmp_path / "gateway-raw")
    save_artifact(via, "gateway.json")
    print(f"\ngateway conformance run: {via['summary']} in {via['duration_s']}s; results {tmp_path / 'gateway.json'}")

    direct = direct_results["scenarios"]
    through = via["scenarios"]
    assert list(through) == list(direct), "both runs must cover the same scenarios"

    compare_checks = os.environ.get("CONFORMANCE_COMPARE", "checks") != "verdict"
    verdict_diff = [n for n in direct if direct[n]["verdict"] != through[n]["verdict"]]
    check_diff = [
        n for n in direct
        if n not in verdict_diff and compare_checks and status_profile(direct[n]) != status_profile(through[n])
    ]
    if verdict_diff or check_diff:
        lines = []
        for n in verdict_diff:
            lines.append(f"- {n}: direct {direct[n]['verdict']}, through toolgate {through[n]['verdict']}")
        for n in check_diff:
            only_direct = status_profile(direct[n]) - status_profile(through[n])
            only_gateway = status_profile(through[n]) - status_profile(direct[n])
            lines.append(f"- {n}: same verdict ({direct[n]['verdict']}) but check statuses differ: "
                         f"direct only {sorted(only_direct.elements())}, "
                         f"through toolgate only {sorted(only_gateway.elements())}")
        details = describe_failures(via, [n for n in verdict_diff + check_diff if through[n]["verdict"] != "pass"])
        pytest.fail(
            f"{len(verdict_diff)} verdict and {len(check_diff)} check-level difference(s) between the direct run "
            f"and the run through toolgate ({url}):\n" + "\n".join(lines)
            + (f"\nFailures through toolgate:\n{details}" if details else "")
        )
