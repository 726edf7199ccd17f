"""SSE streams, resumption and cancellation through the gateway (SPEC §5), driven by hand
with raw httpx streaming requests on protocol 2025-11-25.

- `Last-Event-ID` resumption of a POST stream the gateway serves itself (stdio upstream;
  its event ids are `<stream>-<seq>`), and of an HTTP upstream's stream (passed through:
  the conformance fixture's `test_reconnection` closes its stream mid-call).
- `notifications/cancelled`: 202; over stdio the call's stream ends without a response and
  the shared child keeps serving; over HTTP the upstream's answer passes through unchanged.
- A stdio session's GET stream carries the child's notifications that belong to no request
  (every session receives them: the child is shared).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from e2e_helpers import (
    PYTHON,
    REPO,
    Gateway,
    Procs,
    RawSession,
    SseEvent,
    children_of,
    iter_sse,
    pid_running,
    py_upstream_stdio_argv,
    ready_url,
    start_gateway_quick,
    start_py_upstream_http,
)

ALLOW_ALL = {"version": "1", "default": "allow"}
FIXTURE_SERVER = REPO / "tests" / "conformance" / "fixture_server.py"
EVENT_ID = re.compile(r"(\d+)-(\d+)")  # the gateway's own SSE event ids: <stream>-<seq>
READ_TIMEOUT = 5.0  # seconds any single stream read may block
PROMPT = 5.0  # seconds within which a cancelled call's stream must end


# ------------------------------------------------------------------- helpers
def start_stdio_gateway(procs: Procs, tmp_path: Path) -> Gateway:
    return start_gateway_quick(procs, tmp_path, ALLOW_ALL, command=py_upstream_stdio_argv(),
                               name="toolgate-streams")


def open_session(url: str, token: str | None) -> RawSession:
    session = RawSession(url, token)
    session.initialize()
    assert session.session_id, "the server must assign an Mcp-Session-Id"
    return session


def call(session: RawSession, tool: str, arguments: dict[str, Any], progress_token: str | None = None) -> dict[str, Any]:
    params: dict[str, Any] = {"name": tool, "arguments": arguments}
    if progress_token is not None:
        params["_meta"] = {"progressToken": progress_token}
    return session.message("tools/call", params)


def is_response_to(message: Any, rid: Any) -> bool:
    return isinstance(message, dict) and message.get("id") == rid and ("result" in message or "error" in message)


def until_response(events: Iterable[SseEvent], rid: Any) -> list[SseEvent]:
    """The events up to and including the response to `rid` (fails if the stream ends first)."""
    seen: list[SseEvent] = []
    for event in events:
        seen.append(event)
        if is_response_to(event.message, rid):
            return seen
    raise AssertionError(f"the stream ended without a response to {rid}: {[e.data for e in seen]}")


def text_of(response: dict[str, Any]) -> list[str]:
    assert "result" in response, f"expected a result, got {response}"
    return [block.get("text") for block in response["result"]["content"]]


def progress(token: str, i: int, n: int) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "method": "notifications/progress",
            "params": {"progressToken": token, "progress": i, "total": n, "message": f"step {i} of {n}"}}


def py_child(gw: Gateway) -> int:
    pythons = [pid for pid, _, cmd in children_of(gw.pid) if "py_upstream.py" in cmd]
    assert len(pythons) == 1, f"one stdio child expected, found {children_of(gw.pid)}"
    return pythons[0]


def assert_echo_promptly(session: RawSession, text: str, within: float = 3.0) -> None:
    started = time.monotonic()
    r, answer = session.request("tools/call", {"name": "echo", "arguments": {"text": text}})
    elapsed = time.monotonic() - started
    assert r.status_code == 200 and text_of(answer) == [text], answer
    assert elapsed < within, f"echo after the cancellation took {elapsed:.1f}s"


# ------------------------------------------------------- resumption (stdio)
def test_stdio_post_stream_resumes_after_last_event_id(procs: Procs, tmp_path: Path) -> None:
    gw = start_stdio_gateway(procs, tmp_path)
    session = open_session(gw.url, gw.token)
    try:
        token = "resume-me"
        request = call(session, "slow_count", {"n": 5, "delay": 0.4}, progress_token=token)
        with session.stream(request, timeout=READ_TIMEOUT) as r:
            events = iter(iter_sse(r))
            priming = next(events)
            first = next(events)
        # ... and the client has dropped the connection after one message.
        # On 2025-11-25 the stream opens with a priming event (an id, empty data), so that a
        # client losing the connection before any message can still resume.
        assert priming.data == "" and priming.id is not None and EVENT_ID.fullmatch(priming.id), priming
        assert first.id is not None and EVENT_ID.fullmatch(first.id), f"event id {first.id!r} is not <stream>-<seq>"
        assert first.message == progress(token, 1, 5), first.data
        stream_no, first_seq = (int(x) for x in EVENT_ID.fullmatch(first.id).groups())

        with session.stream(last_event_id=first.id, timeout=READ_TIMEOUT) as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            rest = until_response(iter_sse(r), request["id"])

        messages = [e.message for e in rest]
        assert messages[:-1] == [progress(token, i, 5) for i in range(2, 6)], \
            f"the remaining progress notifications, with the client's token, exactly once: {messages}"
        final = messages[-1]
        assert final["id"] == request["id"] and text_of(final) == ["counted to 5"], final
        ids = [e.id for e in rest]
        assert first.id not in ids, f"the event before Last-Event-ID was replayed: {ids}"
        parsed = [EVENT_ID.fullmatch(i or "") for i in ids]
        assert all(parsed), f"every event has a <stream>-<seq> id: {ids}"
        assert [int(m.group(1)) for m in parsed] == [stream_no] * len(ids), f"all on the POST's stream: {ids}"
        seqs = [int(m.group(2)) for m in parsed]
        assert seqs == sorted(set(seqs)) and seqs[0] > first_seq, f"ids increase, no duplicates: {ids}"
    finally:
        session.close()


# --------------------------------------------------- resumption (HTTP upstream)
def reconnection_transcript(url: str, token: str | None) -> list[Any]:
    """Calls the fixture's `test_reconnection` (its server closes the POST stream mid-call),
    resumes with GET + Last-Event-ID, and returns every message received (priming events
    left out), after checking the shape of the exchange."""
    session = open_session(url, token)
    try:
        request = call(session, "test_reconnection", {})
        with session.stream(request, timeout=READ_TIMEOUT) as r:
            posted = list(iter_sse(r))  # the server ends this stream before the result
        assert posted, "the POST stream carried nothing (not even a priming event)"
        assert posted[0].message is None and posted[0].id, f"a priming event (id, no data) comes first: {posted[0]}"
        assert not any(is_response_to(e.message, request["id"]) for e in posted), \
            f"the fixture closes the stream before its result: {[e.data for e in posted]}"
        last_id = [e.id for e in posted if e.id][-1]

        with session.stream(last_event_id=last_id, timeout=READ_TIMEOUT) as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            resumed = until_response(iter_sse(r), request["id"])
        assert last_id not in [e.id for e in resumed], "the event named by Last-Event-ID was replayed"
        final = resumed[-1].message
        assert text_of(final) == ["Reconnection test completed"], final
        return [e.message for e in posted + resumed if e.message is not None]
    finally:
        session.close()


def test_http_upstream_stream_resumes_through_the_gateway(procs: Procs, tmp_path: Path) -> None:
    fixture = procs.start("fixture_server", [PYTHON, str(FIXTURE_SERVER), "--port", "0"])
    upstream = fixture.wait_for(ready_url)
    gw = start_gateway_quick(procs, tmp_path, ALLOW_ALL, upstream=upstream, name="toolgate-resume-http")

    direct = reconnection_transcript(upstream, None)
    through = reconnection_transcript(gw.url, gw.token)

    log = lambda text: {"jsonrpc": "2.0", "method": "notifications/message",  # noqa: E731
                        "params": {"level": "info", "data": text}}
    assert direct[:-1] == [log("Before disconnect"), log("After reconnect")], direct
    assert through == direct, "the gateway must relay the interrupted and the resumed stream unchanged"


# ------------------------------------------------------------- cancellation
def cancel_a_running_sleep(session: RawSession) -> tuple[dict[str, Any], list[SseEvent]]:
    """POSTs `sleep(30)` (SSE), cancels it on the same session (must be 202), reads its stream
    to the end (must come promptly) and checks that the session still serves a call.
    Returns the request and what its stream carried."""
    request = call(session, "sleep", {"seconds": 30})
    with session.stream(request, timeout=READ_TIMEOUT) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        cancel = session.post({"jsonrpc": "2.0", "method": "notifications/cancelled",
                               "params": {"requestId": request["id"], "reason": "the user gave up"}})
        assert cancel.status_code == 202, f"notifications/cancelled: HTTP {cancel.status_code} {cancel.text}"
        started = time.monotonic()
        events = list(iter_sse(r))  # a stream that does not end fails with ReadTimeout
        elapsed = time.monotonic() - started
    assert elapsed < PROMPT, f"the cancelled call's stream stayed open {elapsed:.1f}s"
    assert_echo_promptly(session, "still here")
    return request, events


def test_stdio_cancellation_ends_the_stream_and_the_child_keeps_serving(procs: Procs, tmp_path: Path) -> None:
    gw = start_stdio_gateway(procs, tmp_path)
    child = py_child(gw)
    session = open_session(gw.url, gw.token)
    try:
        request, events = cancel_a_running_sleep(session)
        assert py_child(gw) == child and pid_running(child), "the shared child must be neither killed nor replaced"
        answered = [e.data for e in events if is_response_to(e.message, request["id"])]
        assert not answered, f"a cancelled request gets no response (MCP cancellation), got {answered}"
    finally:
        session.close()


def cancellation_transcript(url: str, token: str | None) -> list[Any]:
    """What a cancelled call's POST stream carried (priming events left out)."""
    session = open_session(url, token)
    try:
        _, events = cancel_a_running_sleep(session)
        return [e.message for e in events if e.message is not None]
    finally:
        session.close()


def test_http_upstream_cancellation_passes_through(procs: Procs, tmp_path: Path) -> None:
    upstream, _ = start_py_upstream_http(procs)
    gw = start_gateway_quick(procs, tmp_path, ALLOW_ALL, upstream=upstream, name="toolgate-cancel-http")
    direct = cancellation_transcript(upstream, None)
    through = cancellation_transcript(gw.url, gw.token)
    assert through == direct, "the gateway must relay the upstream's answer to a cancellation unchanged"


# ---------------------------------------------------------- GET stream, stdio
def test_stdio_get_streams_receive_notifications_unrelated_to_a_request(procs: Procs, tmp_path: Path) -> None:
    """The child announces a changed resource list (a notification tied to no request): being
    shared, it concerns every client, so each session's GET stream carries it."""
    gw = start_stdio_gateway(procs, tmp_path)
    caller = open_session(gw.url, gw.token)
    other = open_session(gw.url, gw.token)
    caller.extra_headers["Accept"] = "application/json"  # the call's answer comes as plain JSON
    try:
        with caller.stream(timeout=READ_TIMEOUT) as get_caller, other.stream(timeout=READ_TIMEOUT) as get_other:
            r, answer = caller.request("tools/call", {"name": "announce_resources_changed", "arguments": {}})
            assert r.headers["content-type"].startswith("application/json") and text_of(answer) == ["announced"], answer
            for who, stream in (("the caller", get_caller), ("another session", get_other)):
                event = next(iter(iter_sse(stream)))
                assert event.message == {"jsonrpc": "2.0", "method": "notifications/resources/list_changed"}, \
                    f"{who}'s GET stream: {event.data}"
                assert event.id and EVENT_ID.fullmatch(event.id) and event.id.startswith("0-"), \
                    f"{who}: GET stream events are numbered 0-<seq>, got {event.id!r}"
    finally:
        caller.close()
        other.close()



def test_stdio_call_logs_reach_only_the_calling_client(procs: Procs, tmp_path: Path) -> None:
    """A log line the child emits during a call belongs to that call: on a shared stdio child
    it travels on the caller's own POST stream and never reaches another client's GET stream."""
    gw = start_stdio_gateway(procs, tmp_path)
    caller = open_session(gw.url, gw.token)
    other = open_session(gw.url, gw.token)
    try:
        with other.stream(timeout=READ_TIMEOUT) as get_other:
            request = call(caller, "log_message", {"text": "caller-private-log"})
            with caller.stream(request, timeout=READ_TIMEOUT) as r:
                received = [e.message for e in until_response(iter_sse(r), request["id"]) if e.message]
            logs = [m for m in received if m.get("method") == "notifications/message"]
            assert [m["params"]["data"] for m in logs] == ["caller-private-log"], received
            assert text_of(received[-1]) == ["logged"], received[-1]
            # Something unrelated to any call now reaches every GET stream; if the caller's
            # log had leaked, it would come first on the other session's stream.
            r, answer = caller.request("tools/call", {"name": "announce_resources_changed", "arguments": {}})
            assert text_of(answer) == ["announced"], answer
            first = next(e for e in iter_sse(get_other) if e.message)
            assert first.message == {"jsonrpc": "2.0", "method": "notifications/resources/list_changed"}, \
                f"another client saw: {first.data}"
    finally:
        caller.close()
        other.close()
