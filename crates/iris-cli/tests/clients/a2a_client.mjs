// The official A2A JavaScript SDK (@a2a-js/sdk) against Iris's
// /a2a/<team>, run by tests/a2a.rs. Prints one JSON line of what it saw; a
// failed check throws (non-zero exit).
//
//   node a2a_client.mjs BASE KEY SIGNING_SECRET
import assert from 'node:assert/strict';
import { createHmac, randomUUID, timingSafeEqual } from 'node:crypto';
import http from 'node:http';
import { Role, TaskState } from '@a2a-js/sdk';
import { ClientFactory, ClientFactoryOptions, DefaultAgentCardResolver, JsonRpcTransportFactory } from '@a2a-js/sdk/client';
import { TaskNotCancelableError, TaskNotFoundError } from '@a2a-js/sdk/errors';

const [base, key, secret] = process.argv.slice(2);
// The bearer credential on every request, the card's included.
const fetchImpl = (url, init = {}) => fetch(url, { ...init, headers: { ...(init.headers ?? {}), Authorization: `Bearer ${key}` } });
const factory = new ClientFactory(ClientFactoryOptions.createFrom(ClientFactoryOptions.default, {
  transports: [new JsonRpcTransportFactory({ fetchImpl })],
  cardResolver: new DefaultAgentCardResolver({ fetchImpl }),
}));
// The trailing slash: the SDK finds the card relative to it.
const client = await factory.createFromUrl(`${base}/a2a/demo/`);
const msg = (text, contextId) => ({ message: { messageId: randomUUID(), role: Role.ROLE_USER, contextId,
  parts: [{ content: { $case: 'text', value: text } }] } });
const textOf = (parts) => parts.map((p) => p.content?.value ?? '').join('');

const task = await client.sendMessage(msg('hello from javascript'));
assert.equal(task.status.state, TaskState.TASK_STATE_COMPLETED, JSON.stringify(task));
assert.equal(textOf(task.artifacts[0].parts), 'hello from javascript');
const again = await client.sendMessage(msg('more', task.contextId));
assert.equal(again.contextId, task.contextId);
const got = await client.getTask({ id: task.id, historyLength: 10 });
assert.equal(got.history.length, 2);
await assert.rejects(client.cancelTask({ id: task.id }), (e) => e instanceof TaskNotCancelableError);
await assert.rejects(client.getTask({ id: 'msg_nope' }), (e) => e instanceof TaskNotFoundError);

const kinds = [];
let streamed = '';
let last;
for await (const ev of client.sendMessageStream(msg('streamed in pieces'))) {
  kinds.push(ev.payload.$case);
  if (ev.payload.$case === 'artifactUpdate') streamed += textOf(ev.payload.value.artifact.parts);
  if (ev.payload.$case === 'statusUpdate') last = ev.payload.value.status.state;
}
assert.equal(kinds[0], 'task', kinds.join());
assert.equal(streamed, 'streamed in pieces');
assert.equal(last, TaskState.TASK_STATE_COMPLETED);
// Cancel mid-stream: the stream ends with the task canceled.
let cancelledState;
let cancelSent = false;
for await (const ev of client.sendMessageStream(msg('a b c d e f g h i j [[delay=300]]'))) {
  const p = ev.payload;
  if (p.$case === 'artifactUpdate' && !cancelSent) {
    cancelSent = true;
    const c = await client.cancelTask({ id: p.value.taskId });
    assert.equal(c.status.state, TaskState.TASK_STATE_CANCELED, JSON.stringify(c));
  }
  if (p.$case === 'statusUpdate') cancelledState = p.value.status.state;
}
assert.ok(cancelSent, 'an artifact update came before the end');
assert.equal(cancelledState, TaskState.TASK_STATE_CANCELED);

// A push notification: a config on a task that has ended gets its end at
// once; checked as docs/a2a.md says (token, Iris's signature, the body).
const received = [];
const receiver = http.createServer((req, res) => {
  let body = '';
  req.on('data', (c) => { body += c; });
  req.on('end', () => { received.push({ headers: req.headers, body }); res.end(); });
});
await new Promise((ok) => receiver.listen(0, '127.0.0.1', ok));
const hook = `http://127.0.0.1:${receiver.address().port}/js`;
const config = await client.createTaskPushNotificationConfig({ taskId: task.id, id: 'js', url: hook, token: 'tok-js' });
assert.equal(config.url, hook);
for (let i = 0; i < 300 && received.length === 0; i++) await new Promise((ok) => setTimeout(ok, 100));
assert.ok(received.length > 0, 'a push notification came');
const { headers, body } = received[0];
assert.equal(headers['x-a2a-notification-token'], 'tok-js');
const sig = Object.fromEntries(headers['x-iris-signature'].split(',').map((p) => p.split('=')));
const mac = createHmac('sha256', secret).update(`${sig.t}.${body}`).digest('hex');
assert.ok(timingSafeEqual(Buffer.from(mac), Buffer.from(sig.v1)), 'the signature holds');
const pushed = JSON.parse(body);
assert.equal(pushed.task.id, task.id);
assert.equal(pushed.task.status.state, 'TASK_STATE_COMPLETED');
receiver.close();
console.log(JSON.stringify({ task: task.id, streamed: kinds.length, cancelledMidStream: true, pushed: true }));
