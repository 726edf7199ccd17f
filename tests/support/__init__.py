"""Helpers shared by toolgate's Python test suites (put `tests/` on sys.path, then
`from support.procs import ...`; `support.asgi` serves the standalone
conformance servers)."""
