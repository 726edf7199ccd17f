"""The demo (examples/demo.toml, as examples/run-demo.sh runs it): SendIt behind toolgate,
used by the official Python SDK client with the demo grant's token."""

from __future__ import annotations

from pathlib import Path

import pytest
from mcp import MCPError

from e2e_helpers import (
    EXAMPLES,
    Procs,
    assert_allowed,
    assert_denied,
    assert_unknown_tool,
    http_client,
    list_all_tools,
    run,
    sendit_binary,
    start_gateway_config,
    stdio_client,
)

DEMO_TOKEN = "tg_demo_not_a_secret_local_development_only"


def test_demo(procs: Procs, tmp_path: Path) -> None:
    sendit = sendit_binary()
    # The demo configuration file itself; only the listen address and the data directory
    # are overridden on the command line (so that the test neither needs port 8080 nor
    # writes into the repository).
    gw = start_gateway_config(procs, tmp_path, "", config_path=EXAMPLES / "demo.toml",
                              env={"SENDIT_BIN": str(sendit)}, name="toolgate-demo")
    url = gw.server_url("sendit")

    async def body() -> None:
        async with stdio_client([str(sendit)]) as direct:
            upstream_names, _ = await list_all_tools(direct)
            contacts_direct = await direct.call_tool("list_contacts", {})
        assert {"delete_contact", "list_contacts", "schedule_job", "create_payment"} <= set(upstream_names)

        async with http_client(url, DEMO_TOKEN) as client:
            assert client.server_info is not None and client.server_info.name == "sendit-example"
            names, _ = await list_all_tools(client)
            assert names == [n for n in upstream_names if not n.startswith("delete_")], names
            assert "delete_contact" not in names

            contacts = await client.call_tool("list_contacts", {})
            assert_allowed(contacts)
            assert [c.model_dump() for c in contacts.content] == [c.model_dump() for c in contacts_direct.content]
            assert contacts.structured_content == contacts_direct.structured_content

            assert_denied(await client.call_tool("schedule_job", {"command": "rm -rf /", "at": "2030-01-01T00:00:00Z"}),
                          "/tools/schedule_job/action", 'Tool "schedule_job" is denied by policy')
            assert_denied(await client.call_tool("create_payment", {"amount": 25, "currency": "EUR",
                                                                    "recipient": "bob@example.com"}),
                          "/tools/create_payment/require/args.reason-exists", "Every payment needs a reason.")
            assert_denied(await client.call_tool("send_message", {"to": "mallory@evil.test", "body": "hi"}),
                          "/tools/send_message/require/args.to-ends_with",
                          "SendIt may only message example.com addresses.")
            assert_denied(await client.call_tool("purge_all_messages", {}),
                          "(default deny)", 'Tool "purge_all_messages" is not permitted by policy')
            payment = await client.call_tool("create_payment", {"amount": 25, "currency": "EUR",
                                                                "recipient": "bob@example.com", "reason": "team lunch"})
            assert_allowed(payment)
            with pytest.raises(MCPError) as info:
                await client.call_tool("delete_contact", {"id": "ct_1"})
            assert_unknown_tool(info.value, "delete_contact")

    run(body)
