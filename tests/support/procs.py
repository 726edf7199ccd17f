"""Processes for toolgate's Python test suites (tests/e2e, tests/conformance).

Every process runs in its own process group (so stopping it also ends whatever it spawned)
with stdout/stderr going to files (no pipe can fill up); every wait is bounded. Also: free
ports, the `READY <url>` line the fixtures print, the `url:` / `token:` lines quick-mode
`toolgate serve` announces, and the cargo-built binaries under test.

Importable as `support.procs` once `tests/` is on sys.path. Failures are reported with
pytest.fail; pytest is imported only then, so scripts may use the parsers without it.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parent.parent.parent

STARTUP_TIMEOUT = 30.0  # seconds for a process to announce itself / accept connections
STOP_TIMEOUT = 10.0  # seconds a process may take to exit, per signal

ANSI = re.compile(r"\x1b\[[0-9;]*m")
_SEQ = itertools.count(1)


def fail(message: str) -> NoReturn:
    """Fail the running test (pytest.fail)."""
    __tracebackhide__ = True
    import pytest

    pytest.fail(message)


# ------------------------------------------------------------------ binaries
def target_dir() -> Path:
    path = Path(os.environ.get("CARGO_TARGET_DIR", "target"))
    return path if path.is_absolute() else REPO / path


def cargo_binary(name: str, env_var: str, package: str, needed_by: str) -> Path:
    """`$env_var`, else `${CARGO_TARGET_DIR:-target}/debug/<name>` (relative paths are taken
    from the repository root). A missing binary fails the test: `needed_by` cannot run."""
    explicit = os.environ.get(env_var)
    path = Path(explicit) if explicit else target_dir() / "debug" / name
    if not path.is_absolute():
        path = REPO / path
    if not (path.is_file() and os.access(path, os.X_OK)):
        fail(f"{name} binary not found at {path} (set {env_var}, or build it: cargo build -p {package}); "
             f"{needed_by} cannot run without it")
    return path


# ----------------------------------------------------------------- processes
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proc:
    """A child process in its own process group, its output in files."""

    def __init__(self, name: str, argv: list[str], logdir: Path, cwd: Path | None = None,
                 env: dict[str, str] | None = None):
        self.name = name
        self.argv = [str(a) for a in argv]
        logdir.mkdir(parents=True, exist_ok=True)
        stem = f"{name}.{os.getpid()}.{next(_SEQ)}"
        self.stdout_path = logdir / f"{stem}.stdout"
        self.stderr_path = logdir / f"{stem}.stderr"
        full_env = dict(os.environ)
        full_env.update(env or {})
        full_env.setdefault("NO_COLOR", "1")
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(self.argv, cwd=cwd, env=full_env, stdout=out, stderr=err,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        self.pid = self.proc.pid

    def stdout(self) -> str:
        return ANSI.sub("", self.stdout_path.read_text(errors="replace"))

    def stderr(self) -> str:
        return ANSI.sub("", self.stderr_path.read_text(errors="replace"))

    def describe(self) -> str:
        return (f"{self.name}: {' '.join(self.argv)}\n  pid {self.pid}, exit code: {self.proc.poll()}\n"
                f"  stdout ({self.stdout_path}):\n{self.stdout()[-3000:]}\n"
                f"  stderr ({self.stderr_path}):\n{self.stderr()[-4000:]}")

    def wait_for(self, parse: Callable[[str], Any], timeout: float = STARTUP_TIMEOUT, stream: str = "stdout") -> Any:
        """Poll the output until parse(text) returns something; fail on exit or timeout."""
        deadline = time.monotonic() + timeout
        while True:
            found = parse(self.stdout() if stream == "stdout" else self.stderr())
            if found:
                return found
            if self.proc.poll() is not None:
                fail(f"{self.name} exited before it was ready.\n{self.describe()}")
            if time.monotonic() > deadline:
                fail(f"{self.name} was not ready within {timeout:g}s.\n{self.describe()}")
            time.sleep(0.05)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    def stop(self) -> None:
        """SIGTERM the whole process group, SIGKILL it if it lingers; always reaps."""
        if self.proc.poll() is None:
            self.signal_group(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                pass
        # Whatever is left of the group (the leader may have exited leaving children).
        self.signal_group(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=STOP_TIMEOUT)


class Procs:
    """Registry of the processes a test (or module) started; stop_all() ends them all."""

    def __init__(self, logdir: Path):
        self.logdir = logdir
        self.procs: list[Proc] = []

    def start(self, name: str, argv: list[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> Proc:
        proc = Proc(name, argv, self.logdir, cwd=cwd, env=env)
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            with contextlib.suppress(Exception):
                proc.stop()
        self.procs.clear()


# --------------------------------------------------------------- announcements
def ready_url(text: str) -> str | None:
    """The URL of a fixture's `READY <url>` line."""
    for line in text.splitlines():
        if line.startswith("READY "):
            return line.split(None, 1)[1].strip()
    return None


def quick_announcement(stdout: str) -> tuple[str, str] | None:
    """The quick-mode lines `url: <proxy url>` and `token: <grant token>`."""
    url = token = None
    for line in stdout.splitlines():
        key, sep, value = line.strip().partition(":")
        if not sep:
            continue
        key = key.strip().lower()
        if key == "url" and value.strip():
            url = value.strip()
        elif key == "token" and value.strip():
            token = value.strip()
    return (url, token) if url and token else None


def wait_tcp(url: str, proc: Proc, timeout: float = STARTUP_TIMEOUT) -> None:
    """Wait until the URL's host:port accepts TCP connections; fail if `proc` exits first."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((parts.hostname, port), timeout=1):
                return
        except OSError:
            if proc.proc.poll() is not None:
                fail(f"{proc.name} exited before accepting connections at {url}.\n{proc.describe()}")
            if time.monotonic() > deadline:
                fail(f"{proc.name}: nothing accepts connections at {url} after {timeout:g}s.\n{proc.describe()}")
            time.sleep(0.05)
