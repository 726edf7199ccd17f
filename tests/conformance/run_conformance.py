#!/usr/bin/env python3
"""Run the official MCP conformance suite's SERVER scenarios against a URL and
write a machine-readable map scenario -> verdict.

    python run_conformance.py --url http://127.0.0.1:3001/mcp --out results.json
    python run_conformance.py --url http://127.0.0.1:8080/mcp/default \\
        --bearer "$TOKEN" --out gateway.json      # token also via $CONFORMANCE_BEARER

The suite (`@modelcontextprotocol/conformance`, the `conformance server` command)
is run once per scenario (`--scenario NAME -o DIR`), so that every scenario gets
its own time limit and a hanging one cannot take the others with it. Verdicts
come from the suite's own result files (`DIR/server-<scenario>-<timestamp>/
checks.json`: an array of checks with status SUCCESS / FAILURE / WARNING /
SKIPPED / INFO); the console output is only a fallback.

Verdict per scenario, by the suite's own rule (a scenario fails iff one of its
checks has status FAILURE; WARNING and INFO do not fail it):
    pass      checks.json written, no FAILURE check
    fail      checks.json written, at least one FAILURE check
    error     the CLI produced no checks (crash, bad scenario name, ...)
    timeout   the CLI did not finish within --scenario-timeout
    not_run   the overall --timeout was spent before the scenario started

Extra HTTP headers: the conformance CLI (0.1.x) has no option to send custom
headers or a bearer token, so `--header`/`--bearer` start `auth_proxy.py` (next
to this file) on a free loopback port: it adds the headers and forwards every
request, streaming unbuffered, to the target; the suite is pointed at the proxy.

Which CLI: `--conformance-cmd` / $MCP_CONFORMANCE_CMD (e.g. "npx
@modelcontextprotocol/conformance"), else the package installed under
$TOOLGATE_CI_NODE_MODULES (default ~/.cache/toolgate-ci/node/node_modules, run
with the node found there), else `conformance` on PATH.

Exit status: 0 when every scenario passed, 1 otherwise, 2 on a usage/setup error.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import glob
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))  # tests/: the shared `support` package

from support.procs import ready_url  # noqa: E402

PACKAGE = "@modelcontextprotocol/conformance"
DEFAULT_NODE_MODULES = Path.home() / ".cache" / "toolgate-ci" / "node" / "node_modules"
STATUSES = ("SUCCESS", "FAILURE", "WARNING", "SKIPPED", "INFO")


class SetupError(RuntimeError):
    """The suite cannot be run at all (CLI missing, proxy not starting, ...)."""


# ----------------------------------------------------------------- the CLI
def _node_modules() -> Path:
    return Path(os.environ.get("TOOLGATE_CI_NODE_MODULES", DEFAULT_NODE_MODULES)).expanduser()


def conformance_command(override: str | None = None) -> tuple[list[str], dict[str, str]]:
    """The argv prefix that runs the conformance CLI, and the environment for it."""
    env = dict(os.environ)
    cmd = override or os.environ.get("MCP_CONFORMANCE_CMD")
    nm = _node_modules()
    if (nm / ".bin").is_dir():
        env["PATH"] = f"{nm / '.bin'}{os.pathsep}{env.get('PATH', '')}"
    if cmd:
        return shlex.split(cmd), env
    entry = nm / PACKAGE / "dist" / "index.js"
    if entry.is_file():
        node = nm / ".bin" / "node"
        node_cmd = str(node) if node.exists() else (shutil.which("node", path=env["PATH"]) or "node")
        return [node_cmd, str(entry)], env
    found = shutil.which("conformance", path=env.get("PATH"))
    if found:
        return [found], env
    raise SetupError(
        f"cannot find the MCP conformance CLI ({PACKAGE}): set MCP_CONFORMANCE_CMD, or install it under "
        f"{nm} (npm install --prefix {nm.parent} {PACKAGE}), or put `conformance` on PATH"
    )


def conformance_version(cli: list[str], env: dict[str, str]) -> str:
    if len(cli) == 2 and cli[1].endswith("index.js"):
        pkg = Path(cli[1]).parent.parent / "package.json"
        with contextlib.suppress(OSError, ValueError, KeyError):
            return json.loads(pkg.read_text())["version"]
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run([*cli, "--version"], env=env, capture_output=True, text=True, timeout=60)
        return out.stdout.strip() or "unknown"
    return "unknown"


def list_server_scenarios(cli: list[str], env: dict[str, str], spec_version: str | None = None) -> list[str]:
    """Every server scenario the installed suite knows (`conformance list --server`)."""
    args = [*cli, "list", "--server"]
    if spec_version:
        args += ["--spec-version", spec_version]
    with tempfile.TemporaryDirectory(prefix="conformance-list-") as cwd:
        out = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise SetupError(f"`{shlex.join(args)}` failed ({out.returncode}): {out.stderr.strip() or out.stdout.strip()}")
    names: list[str] = []
    in_server = False
    for line in out.stdout.splitlines():
        if line.strip().lower().startswith("server scenarios"):
            in_server = True
            continue
        if line.strip().lower().startswith("client scenarios"):
            in_server = False
            continue
        m = re.match(r"^\s*-\s+(\S+)", line)
        if in_server and m:
            names.append(m.group(1))
    if not names:
        raise SetupError(f"`{shlex.join(args)}` listed no server scenarios:\n{out.stdout}")
    return names


# ----------------------------------------------------------- one scenario
_PASSED_LINE = re.compile(r"Passed:\s*(\d+)/(\d+),\s*(\d+)\s*failed,\s*(\d+)\s*warnings")


def _kill_group(proc: subprocess.Popen[Any]) -> None:
    """Kill a still-running child started with start_new_session (its own process group)."""
    if proc.poll() is None:  # not reaped yet, so its pid/pgid cannot have been reused
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(Exception):
        proc.wait(timeout=5)


def _slim_check(check: dict[str, Any], keep_details: bool) -> dict[str, Any]:
    out = {k: check.get(k) for k in ("id", "name", "status", "description") if k in check}
    if check.get("errorMessage"):
        out["errorMessage"] = check["errorMessage"]
    if keep_details and "details" in check:
        out["details"] = check["details"]
    return out


def run_scenario(
    cli: list[str],
    env: dict[str, str],
    url: str,
    scenario: str,
    workdir: Path,
    timeout: float,
    keep_details: bool = True,
) -> dict[str, Any]:
    outdir = workdir / re.sub(r"[^A-Za-z0-9_.-]", "_", scenario)
    outdir.mkdir(parents=True, exist_ok=True)
    args = [*cli, "server", "--url", url, "--scenario", scenario, "-o", str(outdir)]
    started = time.monotonic()
    log_path = outdir / "cli-output.txt"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            args, env=env, cwd=outdir, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        timed_out = False
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            _kill_group(proc)
    duration = round(time.monotonic() - started, 3)
    output = log_path.read_text(errors="replace")

    checks: list[dict[str, Any]] | None = None
    files = sorted(glob.glob(str(outdir / "*" / "checks.json")))
    if files:
        try:
            checks = json.loads(Path(files[-1]).read_text())
        except (OSError, ValueError):
            checks = None

    result: dict[str, Any] = {"exit_code": None if timed_out else proc.returncode, "duration_s": duration}
    if checks is not None:
        counts = Counter(c.get("status", "?") for c in checks)
        result["verdict"] = "fail" if counts.get("FAILURE") else "pass"
        result["counts"] = {s: counts.get(s, 0) for s in STATUSES}
        result["checks"] = [_slim_check(c, keep_details) for c in checks]
        result["source"] = "checks.json"
    else:
        m = _PASSED_LINE.search(output)
        if timed_out:
            result["verdict"] = "timeout"
            result["error"] = f"no result within {timeout:g}s"
        elif m:  # fallback: the summary line of the console output
            failed, warnings = int(m.group(3)), int(m.group(4))
            result["verdict"] = "fail" if failed else "pass"
            result["counts"] = {"SUCCESS": int(m.group(1)), "FAILURE": failed, "WARNING": warnings}
            result["checks"] = []
            result["source"] = "console"
        else:
            result["verdict"] = "error"
            result["error"] = f"the CLI exited with {proc.returncode} and wrote no checks.json"
    if result["verdict"] != "pass":
        result["output_tail"] = output[-4000:]
    return result


# ------------------------------------------------------------- the proxy
@contextlib.contextmanager
def header_proxy(target: str, headers: list[str], bearer: str | None, timeout: float = 30) -> Iterator[str]:
    """Start auth_proxy.py in front of `target`; yield the URL to test instead."""
    env = dict(os.environ)
    if bearer:
        env["AUTH_PROXY_BEARER"] = bearer  # not on the command line
    args = [sys.executable, str(HERE / "auth_proxy.py"), "--target", target, "--port", "0"]
    for h in headers:
        args += ["--header", h]
    with tempfile.TemporaryDirectory(prefix="auth-proxy-") as tmp:
        out_path, err_path = Path(tmp) / "stdout", Path(tmp) / "stderr"
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            proc = subprocess.Popen(args, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        try:
            deadline = time.monotonic() + timeout
            while (url := ready_url(out_path.read_text(errors="replace"))) is None:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SetupError(f"auth_proxy.py did not start (exit {proc.poll()}):\n"
                                     f"{err_path.read_text(errors='replace')[-3000:]}")
                time.sleep(0.05)
            yield url
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    _kill_group(proc)


# ------------------------------------------------------------- the suite
def run_suite(
    url: str,
    *,
    out: str | os.PathLike[str] | None = None,
    headers: list[str] | None = None,
    bearer: str | None = None,
    scenarios: list[str] | None = None,
    spec_version: str | None = None,
    jobs: int = 4,
    scenario_timeout: float = 90.0,
    timeout: float = 280.0,
    conformance_cmd: str | None = None,
    keep_details: bool = True,
    workdir: str | os.PathLike[str] | None = None,
    log=None,
) -> dict[str, Any]:
    """Run the server scenarios against `url`; return (and write to `out`) the results document."""
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    cli, env = conformance_command(conformance_cmd)
    version = conformance_version(cli, env)
    all_scenarios = list_server_scenarios(cli, env, spec_version)
    selected = scenarios or all_scenarios
    unknown = [s for s in selected if s not in all_scenarios]
    if unknown:
        raise SetupError(f"unknown server scenario(s) {unknown}; the suite has: {', '.join(all_scenarios)}")

    started_wall = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    started = time.monotonic()
    deadline = started + timeout
    header_names = [h.split(":", 1)[0].strip() for h in (headers or [])] + (["Authorization"] if bearer else [])

    with contextlib.ExitStack() as stack:
        tested_url = url
        if headers or bearer:
            tested_url = stack.enter_context(header_proxy(url, headers or [], bearer))
            log(f"conformance: extra headers {header_names} added by auth_proxy at {tested_url} -> {url}")
        if workdir is None:
            workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="conformance-"))
        work = Path(workdir)

        results: dict[str, dict[str, Any]] = {}
        lock = threading.Lock()

        def one(name: str) -> None:
            remaining = deadline - time.monotonic()
            if remaining <= 1:
                res: dict[str, Any] = {"verdict": "not_run", "error": f"overall time limit of {timeout:g}s spent"}
            else:
                res = run_scenario(cli, env, tested_url, name, work, min(scenario_timeout, remaining), keep_details)
            with lock:
                results[name] = res
            log(f"conformance: {name}: {res['verdict']}"
                + (f" ({res['counts']['FAILURE']} failed)" if res.get("counts", {}).get("FAILURE") else ""))

        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            for f in [pool.submit(one, name) for name in selected]:
                f.result()

    ordered = {name: results[name] for name in selected}
    summary = Counter(r["verdict"] for r in ordered.values())
    doc = {
        "suite": {"package": PACKAGE, "version": version, "command": shlex.join(cli)},
        "url": url,
        "tested_url": tested_url,
        "extra_headers": header_names,
        "started_at": started_wall,
        "duration_s": round(time.monotonic() - started, 3),
        "all_passed": all(r["verdict"] == "pass" for r in ordered.values()),
        "summary": dict(sorted(summary.items())),
        "scenarios": ordered,
    }
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(doc, indent=2, sort_keys=False) + "\n")
    return doc


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Run the MCP conformance suite's server scenarios; write scenario -> verdict JSON.")
    p.add_argument("--url", required=True, help="MCP endpoint to test (Streamable HTTP)")
    p.add_argument("--out", help="write the results JSON here (default: stdout)")
    p.add_argument("--header", action="append", default=[], metavar="'NAME: VALUE'",
                   help="extra HTTP header on every request (repeatable; goes through auth_proxy.py)")
    p.add_argument("--bearer", default=os.environ.get("CONFORMANCE_BEARER"),
                   help="send Authorization: Bearer TOKEN (default: $CONFORMANCE_BEARER)")
    p.add_argument("--scenario", action="append", default=[], help="run only this scenario (repeatable; default: all)")
    p.add_argument("--spec-version", help="only scenarios for this spec version (the CLI's --spec-version)")
    p.add_argument("--jobs", type=int, default=4, help="scenarios run concurrently (default 4)")
    p.add_argument("--scenario-timeout", type=float, default=90.0, help="seconds per scenario (default 90)")
    p.add_argument("--timeout", type=float, default=280.0, help="seconds for the whole run (default 280)")
    p.add_argument("--conformance-cmd", help="command that runs the conformance CLI (default: see module doc)")
    p.add_argument("--no-details", action="store_true", help="omit the checks' `details` objects")
    p.add_argument("--workdir", help="keep the CLI's raw result directories here")
    args = p.parse_args(argv)

    try:
        doc = run_suite(
            args.url, out=args.out, headers=args.header, bearer=args.bearer, scenarios=args.scenario or None,
            spec_version=args.spec_version, jobs=args.jobs, scenario_timeout=args.scenario_timeout,
            timeout=args.timeout, conformance_cmd=args.conformance_cmd, keep_details=not args.no_details,
            workdir=args.workdir,
        )
    except (SetupError, OSError, subprocess.SubprocessError) as exc:
        print(f"run_conformance: {exc}", file=sys.stderr)
        return 2
    if not args.out:
        print(json.dumps(doc, indent=2))
    width = max(len(n) for n in doc["scenarios"])
    for name, res in doc["scenarios"].items():
        c = res.get("counts", {})
        extra = f"  {c.get('SUCCESS', 0)} ok, {c.get('FAILURE', 0)} failed, {c.get('WARNING', 0)} warnings" if c else ""
        print(f"{name:<{width}}  {res['verdict']}{extra}", file=sys.stderr)
    print(f"{doc['summary']} in {doc['duration_s']}s (suite {doc['suite']['version']})", file=sys.stderr)
    return 0 if doc["all_passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
