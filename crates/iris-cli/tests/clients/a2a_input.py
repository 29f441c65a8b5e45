"""A2A input-required with the official Python SDK, run by tests/a2a.rs
against a `claude` team (the real Claude Code CLI on the Messages API stub,
`grantPermission: ask`): the agent asks to run Bash, the task waits for
input with the request as a data part, and the caller's next message on
the task allows it, then (a second task) denies it.

    python a2a_input.py BASE KEY PROMPT
"""
import asyncio
import json
import sys
import uuid

import httpx
from google.protobuf import json_format, struct_pb2
from a2a.client import A2ACardResolver, ClientConfig, ClientFactory
from a2a.types import ListTasksRequest, Message, Part, Role, SendMessageRequest, TaskState

BASE, KEY, PROMPT = sys.argv[1:4]


def data_part(d):
    v = struct_pb2.Value()
    json_format.ParseDict(d, v)
    return Part(data=v)


async def send(client, message):
    task = None
    async for ev in client.send_message(SendMessageRequest(message=message)):
        task = ev.task
    return task


async def main():
    http = httpx.AsyncClient(headers={"Authorization": f"Bearer {KEY}"}, timeout=120)
    card = await A2ACardResolver(http, f"{BASE}/a2a/guarded").get_agent_card()
    client = ClientFactory(ClientConfig(httpx_client=http, streaming=False)).create(card)
    seen = {}
    for verdict in ["allow", "deny"]:
        ask = Message(role=Role.ROLE_USER, message_id=str(uuid.uuid4()), parts=[Part(text=PROMPT)])
        task = await send(client, ask)
        assert task.status.state == TaskState.TASK_STATE_INPUT_REQUIRED, task
        parts = task.status.message.parts
        request = json_format.MessageToDict(next(p for p in parts if p.HasField("data")).data)
        assert request["toolName"] == "Bash" and "approved-output" in json.dumps(request["input"]), request
        listed = await client.list_tasks(ListTasksRequest(context_id=task.context_id))
        mine = next(t for t in listed.tasks if t.id == task.id)
        assert mine.status.state == TaskState.TASK_STATE_INPUT_REQUIRED, mine
        answer = Message(role=Role.ROLE_USER, message_id=str(uuid.uuid4()), task_id=task.id,
                         context_id=task.context_id,
                         parts=[data_part({"decision": verdict, "reason": "checked over A2A"})])
        done = await send(client, answer)
        assert done.id == task.id and done.status.state == TaskState.TASK_STATE_COMPLETED, done
        seen[verdict] = done.artifacts[0].parts[0].text if done.artifacts else ""
    assert "approved-output" in seen["allow"], seen
    print(json.dumps(seen))


asyncio.run(main())
