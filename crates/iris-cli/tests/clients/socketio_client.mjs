// The original Iris plans' Socket.IO snippets (seed 001), run as written
// with the official socket.io-client against a live `iris serve`
// (crates/iris-cli/tests/socketio.rs starts it with an `echo` team `demo`).
//
//   node socketio_client.mjs all URL KEY        every check below, in order
//   node socketio_client.mjs reconnect URL KEY  subscribe, wait for the server
//                                               to drop and come back, resubscribe
//   node socketio_client.mjs ended URL KEY TRANSPORT
//                                               connect (websocket or polling),
//                                               print CONNECTED, then the `error`
//                                               event and the disconnect the server
//                                               sends when the credential ends
//   node socketio_client.mjs watch URL KEY SESSION
//                                               subscribe to a conversation
//                                               (cache:subscribe), print
//                                               SUBSCRIBED, then each
//                                               cache:message as MESSAGE <json>,
//                                               until its turn completes
//
// Prints one line per check ("ok …"); exits 1 at the first failure.
import { io } from 'socket.io-client';

const [mode, url, key] = process.argv.slice(2);

function check(cond, what) {
  if (!cond) {
    console.error(`FAILED: ${what}`);
    process.exit(1);
  }
  console.log(`ok ${what}`);
}

const once = (s, ev, ms = 15000) =>
  new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`no ${ev} within ${ms} ms`)), ms);
    s.once(ev, (d) => {
      clearTimeout(t);
      resolve(d);
    });
  });

async function rest(method, path) {
  const r = await fetch(`${url}/api/v1${path}`, {
    method,
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: method === 'POST' ? '{}' : undefined,
  });
  return r.json();
}

/// A tell streamed to the end on `socket`: its chunks and completion.
async function tell(socket, message) {
  const chunks = [];
  const tools = [];
  const onChunk = (data) => chunks.push(data.chunk);
  const onUse = (data) => tools.push(['use', data.toolUse]);
  const onResult = (data) => tools.push(['result', data.toolResult]);
  socket.on('tell:chunk', onChunk);
  socket.on('tell:tool_use', onUse);
  socket.on('tell:tool_result', onResult);
  const complete = once(socket, 'tell:complete');
  const ack = await socket.timeout(15000).emitWithAck('tell:start', { toTeam: 'demo', message, fromTeam: 'frontend' });
  const done = await complete;
  socket.off('tell:chunk', onChunk);
  socket.off('tell:tool_use', onUse);
  socket.off('tell:tool_result', onResult);
  return { ack, chunks, tools, done };
}

async function all() {
  // A wrong token: connect_error with the reason, nothing joined.
  const bad = io(url, { auth: { token: 'iris_sk_live_not-a-key' }, transports: ['websocket'], reconnection: false });
  const err = await once(bad, 'connect_error');
  check(/key|credential|token/i.test(err.message), `a wrong token is refused: ${err.message}`);
  bad.close();
  const none = io(url, { transports: ['polling'], reconnection: false });
  const err2 = await once(none, 'connect_error');
  check(/authentication required/.test(err2.message), `no token is refused: ${err2.message}`);
  none.close();

  // Seed 001, "Connection" (with the key of "Authentication").
  const socket = io(url, {
    auth: { token: key },
    transports: ['websocket', 'polling'], // Fallback to polling
    reconnection: true,
    reconnectionDelay: 1000,
    reconnectionAttempts: 10,
  });
  socket.on('connect', () => {
    console.log('Connected to Iris');
  });
  await once(socket, 'connect');
  check(socket.io.engine.transport.name === 'websocket', 'connected over websocket');

  // Seed 001, "Tell Streaming".
  const chunks = [];
  socket.on('tell:chunk', (data) => {
    chunks.push(data.chunk); // Partial response text
  });
  const completed = once(socket, 'tell:complete');
  socket.on('tell:error', (data) => {
    console.error('Error:', data.error);
  });
  socket.emit('tell:start', {
    toTeam: 'demo',
    message: 'Generate report for the week',
    fromTeam: 'frontend',
  });
  const done = await completed;
  check(done.response === 'Generate report for the week', `tell:complete has the response: ${done.response}`);
  check(chunks.length >= 1 && chunks.join('') === done.response, `tell:chunk ×${chunks.length} make up the response`);
  check(typeof done.messageId === 'string' && done.messageId.startsWith('msg_'), 'the events carry the message id');
  socket.off('tell:chunk');

  // The acknowledgement names the message and its conversation.
  const t = await tell(socket, 'second one');
  check(t.ack.ok === true && t.ack.messageId === t.done.messageId, 'tell:start is acknowledged with its message id');
  const sessionId = t.ack.sessionId;
  check(typeof sessionId === 'string', `… and its session ${sessionId}`);

  // A tool use and then its result, each with the tool's id.
  const used = await tell(socket, 'look [[tool=Grep]]');
  const [use, result] = used.tools;
  check(used.tools.length === 2 && use[0] === 'use' && use[1].tool === 'Grep', `tell:tool_use names the tool: ${JSON.stringify(used.tools)}`);
  check(result?.[0] === 'result' && result[1].id === use[1].id && result[1].output === 'Grep done'
    && result[1].isError === false && Number.isInteger(result[1].durationMs), 'tell:tool_result follows with its output and duration');

  // Seed 001, "Real-Time Cache Messages".
  const messages = [];
  socket.on('cache:message', (data) => {
    messages.push(data);
  });
  const sub = await socket.emitWithAck('cache:subscribe', { sessionId });
  check(sub.ok === true && sub.room === `session:${sessionId}`, 'cache:subscribe joins the session room');
  await tell(socket, 'seen by the cache');
  const deadline = Date.now() + 5000;
  while (!messages.some((m) => m.message.type === 'turn_completed') && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 50));
  }
  check(messages.length > 0 && messages.every((m) => m.sessionId === sessionId), `cache:message ×${messages.length} for the session`);
  check(messages.some((m) => m.message.type === 'chunk'), 'cache:message carries the chunks');
  check(messages.some((m) => m.message.type === 'turn_completed'), '… and the end of the turn');
  socket.emit('cache:unsubscribe', { sessionId });
  await socket.emitWithAck('health:check');
  const before = messages.length;
  await tell(socket, 'not seen any more');
  await new Promise((r) => setTimeout(r, 300));
  check(messages.length === before, 'cache:unsubscribe leaves the room');

  // Seed 001, "Process Lifecycle Events".
  socket.emit('process:subscribe', { team: 'demo' });
  await socket.emitWithAck('health:check');
  const terminated = once(socket, 'process:terminated');
  await rest('POST', '/teams/demo/sleep');
  const term = await terminated;
  check(term.team === 'demo', `process:terminated ${JSON.stringify(term)}`);
  const spawned = once(socket, 'process:spawned');
  await rest('POST', '/teams/demo/wake');
  const sp = await spawned;
  check(sp.team === 'demo' && Number.isInteger(sp.pid), `process:spawned {team, pid: ${sp.pid}}`);

  // Seed 001, "System Health": the system room, and on request.
  const health = await once(socket, 'health:check');
  check(Number.isInteger(health.totalProcesses) && Number.isInteger(health.maxProcesses) && health.uptime > 0,
    `health:check ${JSON.stringify(health)}`);
  const asked = await socket.emitWithAck('health:check');
  check(asked.maxProcesses === health.maxProcesses, 'health:check answers when asked');

  // Bad input: the error body, and the socket goes on.
  const errors = [];
  socket.on('error', (e) => errors.push(e));
  const e1 = await socket.emitWithAck('cache:subscribe', {});
  check(e1.code === 'VALIDATION_ERROR' && /sessionId/.test(e1.message), `missing field: ${e1.code} ${e1.message}`);
  const e2 = await socket.emitWithAck('process:subscribe', { team: 42 });
  check(e2.code === 'VALIDATION_ERROR', `wrong type: ${e2.code}`);
  const e3 = await socket.emitWithAck('process:subscribe', { team: 'secret-team' });
  check(e3.code === 'TEAM_NOT_FOUND', `a team it may not see: ${e3.code}`);
  const e4 = await socket.emitWithAck('no:such-event', { x: 1 });
  check(e4.code === 'METHOD_NOT_FOUND', `unknown event: ${e4.code}`);
  const e5 = await socket.emitWithAck('tell:start', { toTeam: 'demo' });
  check(e5.code === 'VALIDATION_ERROR' && /message/.test(e5.message), `tell without a message: ${e5.message}`);
  const e6 = await socket.emitWithAck('cache:subscribe', { sessionId: '00000000-0000-4000-8000-000000000000' });
  check(e6.code === 'SESSION_NOT_FOUND', `an unknown session: ${e6.code}`);
  check(errors.length === 6 && errors.every((e) => e.code), 'each failure is also an `error` event');
  const after = await tell(socket, 'still here');
  check(after.done.response === 'still here', 'the socket goes on after bad input');

  // Limits: events per second (api.websocket.messagesPerSecond, 50); a
  // message over 1 MB is refused (socketioxide 0.18 caps WebSocket frames
  // at its own 64 MiB; long-polling bodies at api.websocket.maxMessageBytes).
  await new Promise((r) => setTimeout(r, 1100));
  const burst = await Promise.all(Array.from({ length: 80 }, () => socket.timeout(10000).emitWithAck('health:check')));
  const limited = burst.filter((b) => b.code === 'RATE_LIMITED').length;
  check(limited > 0 && limited < 80, `a burst of 80 events: ${limited} refused with RATE_LIMITED`);
  await new Promise((r) => setTimeout(r, 1100));
  const huge = await socket.timeout(15000).emitWithAck('tell:start', { toTeam: 'demo', message: 'x'.repeat(2 * 1024 * 1024) });
  check(huge.code === 'VALIDATION_ERROR', `a 2 MiB message is refused: ${huge.code}`);
  socket.close();

  // The long-polling transport alone.
  const polling = io(url, { auth: { token: key }, transports: ['polling'] });
  await once(polling, 'connect');
  check(polling.io.engine.transport.name === 'polling', 'connected over long-polling');
  const p = await tell(polling, 'over polling, word by word [[delay=30]]');
  check(p.done.response === 'over polling, word by word' && p.chunks.length > 1 && p.chunks.join('') === p.done.response,
    `a tell streamed over polling: ${p.chunks.length} chunks`);
  polling.close();
}

async function reconnect() {
  const socket = io(url, { auth: { token: key }, transports: ['websocket'], reconnection: true, reconnectionDelay: 200, reconnectionDelayMax: 500, reconnectionAttempts: 100 });
  let connects = 0;
  // As the plans' React example: subscribe on every connect.
  socket.on('connect', async () => {
    connects += 1;
    const sub = await socket.emitWithAck('process:subscribe', { team: 'demo' });
    console.log(`SUBSCRIBED ${connects} ${sub.ok}`);
  });
  socket.on('disconnect', (reason) => console.log(`DISCONNECTED ${reason}`));
  socket.on('process:spawned', (d) => {
    console.log(`SPAWNED ${d.team} ${d.pid}`);
    if (connects >= 2) {
      socket.close();
      process.exit(0);
    }
  });
  setTimeout(() => {
    console.error('FAILED: no process:spawned after reconnecting');
    process.exit(1);
  }, 60000);
}

/// A conversation's messages until its turn completes.
async function watch(sessionId) {
  const socket = io(url, { auth: { token: key }, transports: ['websocket'], reconnection: false });
  let timer;
  socket.on('cache:message', (d) => {
    console.log(`MESSAGE ${JSON.stringify(d.message)}`);
    if (d.message.type === 'turn_completed') {
      // Ends by itself once its output is written (process.exit could cut a pipe's last lines).
      clearTimeout(timer);
      socket.close();
    }
  });
  await once(socket, 'connect');
  const sub = await socket.timeout(20000).emitWithAck('cache:subscribe', { sessionId });
  check(sub.ok === true, `subscribed to ${sessionId}: ${JSON.stringify(sub)}`);
  console.log('SUBSCRIBED');
  timer = setTimeout(() => {
    console.error('FAILED: the turn did not complete within 60 s');
    process.exit(1);
  }, 60000);
}

/// Connected until the server ends the socket (its credential ended).
async function ended(transport) {
  const socket = io(url, { auth: { token: key }, transports: [transport], reconnection: false });
  socket.on('error', (body) => console.log(`ERROR ${JSON.stringify(body)}`));
  socket.on('disconnect', (reason) => {
    console.log(`DISCONNECTED ${reason}`);
    process.exit(0);
  });
  await once(socket, 'connect');
  // (30 s: once, with the suite's cluster tests at their busiest, the
  // answer took longer than 10 s on this two-core machine.)
  const ack = await socket.timeout(30000).emitWithAck('health:check');
  console.log(`CONNECTED ${ack.status || 'ok'}`);
  setTimeout(() => {
    console.error('FAILED: still connected after 30 s');
    process.exit(1);
  }, 30000);
}

try {
  if (mode === 'watch') await watch(process.argv[5]);
  else if (mode === 'reconnect') await reconnect();
  else if (mode === 'ended') await ended(process.argv[5] || 'websocket');
  else await all();
  if (mode === 'all') process.exit(0);
} catch (e) {
  console.error(`FAILED: ${e.stack || e}`);
  process.exit(1);
}
