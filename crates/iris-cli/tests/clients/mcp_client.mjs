// The official MCP TypeScript SDKs against Iris's /mcp, run by
// tests/mcp_clients.rs. Prints one JSON line of what it saw; a failed check
// throws (non-zero exit).
//
//   node mcp_client.mjs SDK URL KEY
//     SDK: sdk1      @modelcontextprotocol/sdk 1.x, revision 2025-11-25
//          v2-legacy @modelcontextprotocol/client 2.x, revision 2025-11-25
//          v2-2026   @modelcontextprotocol/client 2.x, pinned to 2026-07-28
import assert from 'node:assert/strict';

const [sdk, url, key] = process.argv.slice(2);
const headers = { Authorization: `Bearer ${key}` };
const info = { name: `iris-test-${sdk}`, version: '1.0.0' };

let client;
let transport;
// callTool's options: sdk 1.x takes a result schema first.
let call;
if (sdk === 'sdk1') {
  const { Client } = await import('@modelcontextprotocol/sdk/client/index.js');
  const { StreamableHTTPClientTransport } = await import('@modelcontextprotocol/sdk/client/streamableHttp.js');
  client = new Client(info);
  transport = new StreamableHTTPClientTransport(new URL(url), { requestInit: { headers } });
  call = (params, options) => client.callTool(params, undefined, options);
} else {
  const v2 = await import('@modelcontextprotocol/client');
  const versionNegotiation = sdk === 'v2-2026' ? { mode: { pin: '2026-07-28' } } : undefined;
  client = new v2.Client(info, { versionNegotiation });
  transport = new v2.StreamableHTTPClientTransport(new URL(url), { requestInit: { headers } });
  call = (params, options) => client.callTool(params, options);
}
await client.connect(transport);

const { tools } = await client.listTools();
const names = tools.map((t) => t.name);
for (const n of ['send_message', 'list_teams', 'get_date']) assert.ok(names.includes(n), n);

// An answer, and the team's text as progress on the way.
const chunks = [];
const result = await call(
  { name: 'send_message', arguments: { toTeam: 'demo', message: '[[delay=30]] one two three', timeout: 0 } },
  { onprogress: (p) => chunks.push(p.message ?? '') },
);
assert.equal(result.isError, false, JSON.stringify(result));
assert.equal(result.structuredContent.response, 'one two three');
assert.ok(chunks.length >= 2, `progress: ${JSON.stringify(chunks)}`);
assert.equal(chunks.join(''), 'one two three');

// Tool traffic as log messages (sdk 1.x: logging is gone from 2026-07-28).
let toolLog = [];
if (sdk === 'sdk1') {
  const { LoggingMessageNotificationSchema } = await import('@modelcontextprotocol/sdk/types.js');
  client.setNotificationHandler(LoggingMessageNotificationSchema, (n) => toolLog.push(n.params.data));
  await client.setLoggingLevel('info');
  const used = await call({ name: 'send_message', arguments: { toTeam: 'demo', message: 'look [[tool=Read]]', timeout: 0 } }, {});
  assert.equal(used.isError, false, JSON.stringify(used));
  // Log messages are not tied to the request: they come on the session's
  // own stream, maybe after the answer.
  for (let i = 0; i < 50 && toolLog.length < 2; i++) await new Promise((r) => setTimeout(r, 100));
  const [use, res] = toolLog;
  assert.equal(use?.toolUse?.tool, 'Read', JSON.stringify(toolLog));
  assert.equal(res?.toolResult?.id, use.toolUse.id, JSON.stringify(toolLog));
  assert.equal(res.toolResult.output, 'Read done');
  assert.equal(used.structuredContent.toolUses[0].output, 'Read done');
}

// A validation failure names the field.
const bad = await client.callTool({ name: 'send_message', arguments: { toTeam: 'demo' } });
assert.equal(bad.isError, true);
const body = JSON.parse(bad.content[0].text);
assert.equal(body.code, 'VALIDATION_ERROR');
assert.match(JSON.stringify(body.details), /message/);

// An unknown tool is a protocol error.
await assert.rejects(client.callTool({ name: 'no_such_tool', arguments: {} }), /unknown tool/);

// Resources: the team, by its template.
const { resources } = await client.listResources();
assert.ok(resources.some((r) => r.uri === 'iris://teams/demo'), JSON.stringify(resources));
const { resourceTemplates } = await client.listResourceTemplates();
assert.ok(resourceTemplates.some((t) => t.uriTemplate === 'iris://teams/{team}'));
const status = await client.readResource({ uri: 'iris://teams/demo' });
assert.match(status.contents[0].text, /"demo"/);

// Cancelling the request cancels the turn it started.
const abort = new AbortController();
const slow = call(
  { name: 'send_message', arguments: { toTeam: 'demo', message: '[[delay=400]] a b c d e f g h', timeout: 0 } },
  { signal: abort.signal, onprogress: () => abort.abort('enough') },
);
await assert.rejects(slow);
let last;
for (let i = 0; i < 50; i++) {
  const report = await client.callTool({ name: 'session_report', arguments: { toTeam: 'demo', limit: 1 } });
  last = report.structuredContent.messages.at(-1);
  // (Behind a load balancer the report may be read on a node that has not
  // yet seen the new turn's record: wait for that turn, then its end.)
  if (last.request.includes('[[delay=400]]') && last.status !== 'running' && last.status !== 'queued') break;
  await new Promise((r) => setTimeout(r, 100));
}
assert.equal(last.status, 'cancelled', JSON.stringify(last));

await client.close();
console.log(JSON.stringify({ sdk, tools: names.length, progress: chunks.length, toolLog: toolLog.length, cancelled: last.status }));
