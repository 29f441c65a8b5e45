"""A remote A2A agent built with the official Python SDK's server (a2a-sdk,
Starlette + uvicorn), started by tests/a2a_remote.rs: the agent an Iris
team of the `a2a` driver talks to. Prints `PORT <n>` once it listens.

    python a2a_remote.py SECRET
      Every call needs `Authorization: Bearer SECRET` (else 401). The card
      at /blocking/.well-known/agent-card.json says it does not stream.

What it answers (streamed as two artifact chunks):
  anything        -> "remote <n>: <text>", n counting the messages of the context
  "ask ..."       -> input-required in words ("Which colour?"); the answer on
                     the task -> "colour <answer>"
  "deploy ..."    -> input-required with a data part {toolName: Deploy, input};
                     a data part {decision, reason} on the task -> "deployed" or
                     "not deployed: <reason>"
  "login"         -> auth-required
  "slow"          -> a chunk, then nothing for a minute (to be cancelled)
"""
import asyncio
import socket
import sys
from collections import defaultdict

import uvicorn
from a2a.helpers import get_data_parts, get_message_text, new_text_message
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes
from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
from a2a.types import (AgentCapabilities, AgentCard, AgentInterface, AgentSkill, Part, Role,
                       Task, TaskState, TaskStatus)
from starlette.applications import Starlette
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.responses import JSONResponse

SECRET = sys.argv[1]
said = defaultdict(int)


class Remote(AgentExecutor):
    async def execute(self, context: RequestContext, queue):
        task = context.current_task
        up = TaskUpdater(queue, context.task_id, context.context_id)
        if task is None:
            await queue.enqueue_event(Task(id=context.task_id, context_id=context.context_id,
                                           status=TaskStatus(state=TaskState.TASK_STATE_SUBMITTED),
                                           history=[context.message]))
        await up.start_work()
        text = get_message_text(context.message)
        msg = lambda t: new_text_message(t, context_id=context.context_id, task_id=context.task_id,
                                         role=Role.ROLE_AGENT)
        if task is not None and task.status.state == TaskState.TASK_STATE_INPUT_REQUIRED:
            data = get_data_parts(context.message.parts)
            if data:
                d = data[0]
                reply = "deployed" if d.get("decision") == "allow" else f"not deployed: {d.get('reason', '')}"
            else:
                reply = f"colour {text}"
            await up.add_artifact([Part(text=reply)], name="answer")
            await up.complete()
            return
        said[context.context_id] += 1
        if text.startswith("ask"):
            await up.requires_input(msg("Which colour?"))
            return
        if text.startswith("deploy"):
            m = msg("May I deploy?")
            m.parts.append(Part(data=None))
            from google.protobuf import struct_pb2
            v = struct_pb2.Value()
            v.struct_value.update({"toolName": "Deploy", "input": {"target": "prod"}})
            m.parts[-1].data.CopyFrom(v)
            await up.requires_input(m)
            return
        if text == "login":
            await up.requires_auth(msg("Sign in at the remote first."))
            return
        if text == "slow":
            await up.add_artifact([Part(text="working...")], artifact_id="a", name="answer")
            await asyncio.sleep(60)
        await up.add_artifact([Part(text=f"remote {said[context.context_id]}:")], artifact_id="a",
                              name="answer")
        await up.add_artifact([Part(text=f" {text}")], artifact_id="a", append=True, last_chunk=True)
        await up.complete()

    async def cancel(self, context: RequestContext, queue):
        await TaskUpdater(queue, context.task_id, context.context_id).cancel()


class Bearer(BaseHTTPMiddleware):
    async def dispatch(self, request, call_next):
        if request.headers.get("authorization") != f"Bearer {SECRET}":
            return JSONResponse({"error": "unauthorized"}, status_code=401)
        return await call_next(request)


def main():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    card = AgentCard(
        name="remote", description="A remote agent of the tests", version="1.0",
        supported_interfaces=[AgentInterface(url=f"http://127.0.0.1:{port}/",
                                             protocol_binding="JSONRPC", protocol_version="1.0")],
        capabilities=AgentCapabilities(streaming=True),
        default_input_modes=["text/plain"], default_output_modes=["text/plain"],
        skills=[AgentSkill(id="talk", name="talk", description="talks", tags=["test"])])
    handler = DefaultRequestHandler(agent_executor=Remote(), task_store=InMemoryTaskStore(),
                                    agent_card=card)
    # The same agent, its card saying it does not stream (the bridge then
    # sends SendMessage and follows the task with GetTask).
    blocking = AgentCard()
    blocking.CopyFrom(card)
    blocking.capabilities.streaming = False
    app = Starlette(routes=create_agent_card_routes(card)
                    + create_agent_card_routes(blocking, card_url="/blocking/.well-known/agent-card.json")
                    + create_jsonrpc_routes(handler, "/"))
    app.add_middleware(Bearer)
    print(f"PORT {port}", flush=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    asyncio.run(server.serve(sockets=[sock]))


main()
