"""Fixtures for toolgate's end-to-end tests (see e2e_helpers.py for the helpers).

    /root/.cache/toolgate-ci/venv/bin/python -m pytest tests/e2e -q -p no:cacheprovider

Environment:
  TOOLGATE_BIN            gateway binary (default ${CARGO_TARGET_DIR:-target}/debug/toolgate)
  SENDIT_BIN              demo upstream (default ${CARGO_TARGET_DIR:-target}/debug/sendit-example)
  TOOLGATE_PYTHON         Python with the MCP SDK 2.x for the fixtures (default: this interpreter)
  TOOLGATE_NODE_MODULES   node_modules with @modelcontextprotocol/server-everything
A missing binary fails the tests that need it (nothing is skipped).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from e2e_helpers import Procs  # noqa: E402


@pytest.fixture(scope="session")
def e2e_logdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("e2e-logs")


def _procs_fixture(name: str, scope: str, doc: str) -> Any:
    """A fixture `name` yielding a `Procs` registry whose processes are all stopped (process
    groups killed) when the fixture's `scope` ends."""

    def registry_fixture(e2e_logdir: Path) -> Iterator[Procs]:
        registry = Procs(e2e_logdir)
        try:
            yield registry
        finally:
            registry.stop_all()

    registry_fixture.__doc__ = doc
    return pytest.fixture(scope=scope, name=name)(registry_fixture)  # type: ignore[call-overload]


procs = _procs_fixture("procs", "function",
                       "Processes started by one test; all stopped (process groups killed) afterwards.")
module_procs = _procs_fixture("module_procs", "module",
                              "Processes shared by the tests of one module; all stopped after the module.")


@pytest.fixture(scope="module")
def module_tmp(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    return tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])
