"""A2A push notifications with the official Python SDK (a2a-sdk), run by
tests/a2a.rs. A receiver on loopback records what Iris POSTs; each
notification is verified as docs/a2a.md says: the client's token
(`X-A2A-Notification-Token`), its credential (`Authorization`), Iris's
signature (`X-Iris-Signature: t=<unix s>,v1=<hex HMAC-SHA256 of "<t>.<body>">`
keyed with `webhooks.signingSecret`), and the body a `StreamResponse`
holding the task. Prints one JSON line of what it saw; a failed check
raises.

    python a2a_push.py BASE KEY SIGNING_SECRET
"""
import asyncio
import hashlib
import hmac
import json
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, HTTPServer

import httpx
from a2a.client import A2ACardResolver, ClientConfig, ClientFactory
from a2a.types import (AuthenticationInfo, DeleteTaskPushNotificationConfigRequest,
                       GetTaskPushNotificationConfigRequest, ListTasksRequest,
                       ListTaskPushNotificationConfigsRequest, Message, Part, Role,
                       SendMessageConfiguration, SendMessageRequest, StreamResponse,
                       TaskPushNotificationConfig, TaskState)
from google.protobuf import json_format

BASE, KEY, SECRET = sys.argv[1:4]
received = []


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        received.append((self.path, self.headers, body))  # case-insensitive
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def verified(headers, body, token, credential):
    """The notification's body as a StreamResponse, once every check holds."""
    assert headers.get("X-A2A-Notification-Token") == token, headers
    assert headers.get("Authorization") == credential, headers
    sig = dict(p.split("=", 1) for p in headers["X-Iris-Signature"].split(","))
    mac = hmac.new(SECRET.encode(), f"{sig['t']}.".encode() + body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(mac, sig["v1"]), (headers, body)
    assert abs(time.time() - int(sig["t"])) < 300, sig
    return json_format.ParseDict(json.loads(body), StreamResponse())


def msg(text):
    return Message(role=Role.ROLE_USER, message_id=str(uuid.uuid4()), parts=[Part(text=text)])


async def until(what, check, secs=30):
    for _ in range(secs * 10):
        found = check()
        if found:
            return found
        await asyncio.sleep(0.1)
    raise AssertionError(f"no {what} after {secs} s: {received}")


async def main():
    server = HTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}"
    seen = {}
    http = httpx.AsyncClient(headers={"Authorization": f"Bearer {KEY}"}, timeout=30)
    card = await A2ACardResolver(http, f"{BASE}/a2a/demo").get_agent_card()
    assert card.capabilities.push_notifications, card
    client = ClientFactory(ClientConfig(httpx_client=http, streaming=False)).create(card)

    # Inline: the config comes with the message.
    req = SendMessageRequest(message=msg("pushed [[delay=300]]"))
    req.configuration.CopyFrom(SendMessageConfiguration(
        return_immediately=True,
        task_push_notification_config=TaskPushNotificationConfig(
            url=f"{url}/inline", token="tok-inline",
            authentication=AuthenticationInfo(scheme="Bearer", credentials="push-cred"))))
    task = None
    async for ev in client.send_message(req):
        task = ev.task

    def ended(path):
        for p, h, b in received:
            if p == path:
                r = verified(h, b, "tok-inline" if p == "/inline" else "tok-later",
                             "Bearer push-cred" if p == "/inline" else None)
                if r.task.status.state == TaskState.TASK_STATE_COMPLETED:
                    return r
        return None

    done = await until("completed notification", lambda: ended("/inline"))
    assert done.task.id == task.id, (done, task)
    assert done.task.artifacts[0].parts[0].text == "pushed", done
    states = [verified(h, b, "tok-inline", "Bearer push-cred").task.status.state
              for p, h, b in received if p == "/inline"]
    assert TaskState.TASK_STATE_WORKING in states, states
    seen["inline"] = len(states)

    # Set on a task after it was sent (here: one that has already ended —
    # its end is sent at once); then get, list, delete.
    cfg = await client.create_task_push_notification_config(TaskPushNotificationConfig(
        task_id=task.id, id="later", url=f"{url}/later", token="tok-later"))
    assert cfg.id == "later" and cfg.task_id == task.id and cfg.url == f"{url}/later", cfg
    later = await until("notification of an ended task", lambda: ended("/later"))
    assert later.task.id == task.id, later
    got = await client.get_task_push_notification_config(
        GetTaskPushNotificationConfigRequest(task_id=task.id, id="later"))
    assert got.token == "tok-later", got
    listed = await client.list_task_push_notification_configs(
        ListTaskPushNotificationConfigsRequest(task_id=task.id))
    ids = sorted(c.id for c in listed.configs)
    assert len(ids) == 2 and "later" in ids, listed
    # The credential is never shown back.
    assert all(not c.authentication.credentials for c in listed.configs), listed
    await client.delete_task_push_notification_config(
        DeleteTaskPushNotificationConfigRequest(task_id=task.id, id="later"))
    listed = await client.list_task_push_notification_configs(
        ListTaskPushNotificationConfigsRequest(task_id=task.id))
    assert [c.id for c in listed.configs] != ids and len(listed.configs) == 1, listed
    seen["configs"] = ids
    seen["task"] = task.id

    # A destination the SSRF guard refuses: an error, and no task is made.
    before = (await client.list_tasks(ListTasksRequest())).total_size
    req = SendMessageRequest(message=msg("never sent"))
    req.configuration.CopyFrom(SendMessageConfiguration(
        task_push_notification_config=TaskPushNotificationConfig(
            url="http://169.254.169.254/latest/meta-data")))
    try:
        async for _ in client.send_message(req):
            pass
        raise AssertionError("a refused push URL was accepted")
    except Exception as e:
        assert "refused" in str(e).lower() or "not allowed" in str(e).lower() or "url" in str(e).lower(), e
        seen["refused"] = str(e)[:120]
    after = (await client.list_tasks(ListTasksRequest())).total_size
    assert after == before, (before, after)

    print(json.dumps(seen))
    await http.aclose()
    server.shutdown()


asyncio.run(main())
