"""The official A2A Python SDK (a2a-sdk) against Iris's /a2a/<team>, run by
tests/a2a.rs. Prints one JSON line of what it saw; a failed check raises
(non-zero exit).

    python a2a_client.py BASE KEY LIMITED_KEY
      BASE: http://127.0.0.1:PORT; KEY sees every team; LIMITED_KEY only `demo`.
"""
import asyncio
import json
import sys
import uuid

import httpx
from google.protobuf.struct_pb2 import Struct, Value
from a2a.client import A2ACardResolver, ClientConfig, ClientFactory
from a2a.types import (CancelTaskRequest, GetTaskRequest, ListTasksRequest, Message, Part, Role,
                       SendMessageConfiguration, SendMessageRequest, TaskState)
from a2a.utils.errors import TaskNotCancelableError, TaskNotFoundError

BASE, KEY, LIMITED = sys.argv[1:4]


def msg(text, context=None):
    m = Message(role=Role.ROLE_USER, message_id=str(uuid.uuid4()), parts=[Part(text=text)])
    if context:
        m.context_id = context
    return m


async def client_for(http, team):
    card = await A2ACardResolver(http, f"{BASE}/a2a/{team}").get_agent_card()
    return card, ClientFactory(ClientConfig(httpx_client=http, streaming=False)).create(card)


async def send(client, text, context=None, **config):
    req = SendMessageRequest(message=msg(text, context))
    if config:
        req.configuration.CopyFrom(SendMessageConfiguration(**config))
    task = None
    async for ev in client.send_message(req):
        task = ev.task
    return task


async def main():
    seen = {}
    http = httpx.AsyncClient(headers={"Authorization": f"Bearer {KEY}"}, timeout=30)
    card, client = await client_for(http, "demo")
    assert card.name == "demo", card
    assert card.supported_interfaces[0].protocol_version == "1.0", card
    assert card.supported_interfaces[0].url.endswith("/a2a/demo"), card
    seen["card"] = card.name

    # A blocking send: the turn run to its end, the answer as the artifact.
    task = await send(client, "hello over a2a")
    assert task.status.state == TaskState.TASK_STATE_COMPLETED, task
    assert task.artifacts[0].parts[0].text == "hello over a2a", task
    # The conversation goes on in its context.
    again = await send(client, "second in the context", context=task.context_id)
    assert again.context_id == task.context_id, (again, task)
    got = await client.get_task(GetTaskRequest(id=task.id, history_length=10))
    assert got.status.state == TaskState.TASK_STATE_COMPLETED and len(got.history) == 2, got
    listed = await client.list_tasks(ListTasksRequest(context_id=task.context_id))
    assert {t.id for t in listed.tasks} == {task.id, again.id}, listed
    seen["tasks"] = len(listed.tasks)

    # A finished task cannot be cancelled; a running one can.
    try:
        await client.cancel_task(CancelTaskRequest(id=task.id))
        raise AssertionError("a completed task was cancelled")
    except TaskNotCancelableError:
        pass
    slow = await send(client, "a b c d e f g h i j [[delay=300]]", return_immediately=True)
    assert slow.status.state in (TaskState.TASK_STATE_SUBMITTED, TaskState.TASK_STATE_WORKING), slow
    await asyncio.sleep(0.6)
    cancelled = await client.cancel_task(CancelTaskRequest(id=slow.id))
    assert cancelled.status.state == TaskState.TASK_STATE_CANCELED, cancelled
    seen["cancelled"] = True

    # Streaming: the task, the answer in pieces, a tool use as a working
    # status, the end.
    streaming = ClientFactory(ClientConfig(httpx_client=http)).create(card)
    kinds, text, final = [], "", None
    async for ev in streaming.send_message(SendMessageRequest(message=msg("one two three [[tool=Read]]"))):
        kind = ev.WhichOneof("payload")
        kinds.append(kind)
        if kind == "artifact_update":
            text += "".join(p.text for p in ev.artifact_update.artifact.parts)
        if kind == "status_update":
            final = ev.status_update.status
    assert kinds[0] == "task" and "artifact_update" in kinds, kinds
    assert text == "one two three", text
    assert final.state == TaskState.TASK_STATE_COMPLETED, final
    assert any(k == "status_update" for k in kinds[1:-1]), f"the tool use as a working status: {kinds}"
    seen["streamed"] = len(kinds)

    # A streamed send pauses at input-required (the echo agent asks to use
    # Bash); the answer on the task, streamed too, follows it to its end.
    last = None
    async for ev in streaming.send_message(SendMessageRequest(message=msg("asked [[ask=Bash]]"))):
        if ev.WhichOneof("payload") == "status_update":
            last = ev.status_update
    assert last.status.state == TaskState.TASK_STATE_INPUT_REQUIRED, last
    asked = [p for p in last.status.message.parts if p.HasField("data")]
    assert asked and asked[0].data.struct_value["toolName"] == "Bash", last
    answer = Message(role=Role.ROLE_USER, message_id=str(uuid.uuid4()), task_id=last.task_id,
                     context_id=last.context_id,
                     parts=[Part(text="yes"), Part(data=Value(struct_value=Struct()))])
    answer.parts[1].data.struct_value.update({"decision": "allow"})
    final = None
    async for ev in streaming.send_message(SendMessageRequest(message=answer)):
        if ev.WhichOneof("payload") == "status_update":
            final = ev.status_update.status
    assert final.state == TaskState.TASK_STATE_COMPLETED, final
    seen["streamedInput"] = True

    # Unknown task; a failed turn is a failed task.
    try:
        await client.get_task(GetTaskRequest(id="msg_nope"))
        raise AssertionError("an unknown task was found")
    except TaskNotFoundError:
        pass
    failed = await send(client, "[[error=broken on purpose]]")
    assert failed.status.state == TaskState.TASK_STATE_FAILED, failed
    assert "broken on purpose" in failed.status.message.parts[0].text, failed

    # A key limited to `demo`: the other team's card is not there, nor its
    # tasks through demo's endpoint.
    limited = httpx.AsyncClient(headers={"Authorization": f"Bearer {LIMITED}"}, timeout=30)
    r = await limited.get(f"{BASE}/a2a/other/.well-known/agent-card.json")
    assert r.status_code == 404, r.text
    other = await send((await client_for(http, "other"))[1], "for other")
    _, demo_limited = await client_for(limited, "demo")
    try:
        await demo_limited.get_task(GetTaskRequest(id=other.id))
        raise AssertionError("another team's task was found")
    except TaskNotFoundError:
        pass
    seen["limited"] = True
    await http.aclose()
    await limited.aclose()
    print(json.dumps(seen))


asyncio.run(main())
