"""The official MCP Python SDK (`mcp` on PyPI) against Iris, run by
tests/mcp_clients.rs. Prints one JSON line of what it saw; any failed
check raises (non-zero exit).

    mcp_client.py http URL KEY MODE     # MODE: legacy (2025-11-25) or 2026-07-28
    mcp_client.py stdio IRIS_BIN [ARG]  # `iris mcp [ARG]` on stdio (IRIS_HOME from the environment)
    mcp_client.py noauth URL            # no key: the server must refuse with 401
"""

import asyncio
import json
import os
import sys

import httpx2
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client


async def exercise(client: Client) -> dict:
    tools = await client.list_tools()
    names = {t.name for t in tools.tools}
    assert {"send_message", "list_teams", "get_date"} <= names, names

    chunks: list[str] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        chunks.append(message or "")

    result = await client.call_tool(
        "send_message",
        {"toTeam": "demo", "message": "hello from python", "timeout": 0},
        progress_callback=on_progress,
    )
    assert not result.is_error, result
    assert result.structured_content["response"] == "hello from python", result.structured_content
    assert json.loads(result.content[0].text) == result.structured_content
    assert "hello from python" in "".join(chunks), chunks

    # A validation failure is a tool error whose body names the field.
    bad = await client.call_tool("send_message", {"toTeam": "demo"})
    assert bad.is_error, bad
    body = json.loads(bad.content[0].text)
    assert body["code"] == "VALIDATION_ERROR", body
    assert "message" in json.dumps(body["details"]), body

    teams = await client.read_resource("iris://teams")
    listed = json.loads(teams.contents[0].text)
    assert [t["name"] for t in listed["teams"]] == ["demo"], listed
    return {"tools": len(names), "progress": len(chunks), "response": result.structured_content["response"]}


async def main() -> None:
    how = sys.argv[1]
    if how == "http":
        url, key, mode = sys.argv[2:5]
        http = create_mcp_http_client(headers={"Authorization": f"Bearer {key}"})
        async with Client(streamable_http_client(url, http_client=http), mode=mode) as client:
            seen = await exercise(client)
    elif how == "stdio":
        params = StdioServerParameters(command=sys.argv[2], args=["mcp", *sys.argv[3:]], env=dict(os.environ))
        async with Client(params, mode="legacy") as client:
            seen = await exercise(client)
    elif how == "noauth":
        # The SDK turns an HTTP error into a JSON-RPC one; the answers
        # themselves are read from the HTTP client.
        answers: list[httpx2.Response] = []

        async def record(response: httpx2.Response) -> None:
            answers.append(response)

        http = create_mcp_http_client()
        http.event_hooks["response"].append(record)
        try:
            async with Client(streamable_http_client(sys.argv[2], http_client=http), mode="legacy") as client:
                await client.list_tools()
        except Exception:
            pass
        else:
            raise AssertionError("connected without a key")
        assert answers and answers[0].status_code == 401, [a.status_code for a in answers]
        assert answers[0].headers["www-authenticate"].startswith("Bearer"), answers[0].headers
        seen = {"refused": answers[0].status_code}
    else:
        raise SystemExit(f"unknown mode {how}")
    print(json.dumps(seen))


asyncio.run(main())
