// The official A2A JavaScript SDK (@a2a-js/sdk) against Iris's
// /a2a/<team>, run by tests/a2a.rs. Prints one JSON line of what it saw; a
// failed check throws (non-zero exit).
//
//   node a2a_client.mjs BASE KEY
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { Role, TaskState } from '@a2a-js/sdk';
import { ClientFactory, ClientFactoryOptions, DefaultAgentCardResolver, JsonRpcTransportFactory } from '@a2a-js/sdk/client';
import { TaskNotCancelableError, TaskNotFoundError } from '@a2a-js/sdk/errors';

const [base, key] = process.argv.slice(2);
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
console.log(JSON.stringify({ task: task.id, streamed: kinds.length }));
