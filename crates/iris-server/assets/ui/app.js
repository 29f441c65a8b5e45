// The Iris dashboard: plain JavaScript over the same API as every client
// (REST under /api/v1, the WebSockets /api/v1/stream and /ws). Credentials
// live in memory and sessionStorage (so a reload keeps the sign-in), are
// sent only in Authorization headers or a WebSocket's first message, and
// never in a URL. Text from the server is put in with textContent only.
'use strict';

const API = '/api/v1';
const state = { token: null, refresh: null, key: null, expiresAt: 0, teams: [], events: null, refreshing: null, chatTurn: null };

const $ = (id) => document.getElementById(id);

function el(tag, text, attrs = {}) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  return e;
}

// ---- markdown, as DOM nodes: nothing an agent writes becomes markup ----
// A small subset (headings, paragraphs, lists, fenced code, inline code,
// bold, italics, http(s) links), built with createElement and textContent
// only; any HTML in the text stays text. No library: the page stays one
// file and works offline.

function inline(text) {
  const out = document.createDocumentFragment();
  // Bounded link parts: an answer of many unclosed `[a](` stays linear.
  const pattern = /(`[^`\n]+`)|(\*\*[^*\n]+\*\*)|(\*[^*\n]+\*)|(\[[^\]\n]{1,500}\]\([^)\s]{1,2000}\))/g;
  let last = 0;
  for (const m of text.matchAll(pattern)) {
    if (m.index > last) out.append(text.slice(last, m.index));
    const t = m[0];
    if (m[1]) out.append(el('code', t.slice(1, -1)));
    else if (m[2]) out.append(el('strong', t.slice(2, -2)));
    else if (m[3]) out.append(el('em', t.slice(1, -1)));
    else {
      const label = t.slice(1, t.indexOf(']('));
      const href = t.slice(t.indexOf('](') + 2, -1);
      if (/^https?:\/\//i.test(href)) {
        out.append(el('a', label, { href, rel: 'noopener noreferrer', target: '_blank' }));
      } else {
        out.append(t); // Another scheme (javascript:, data:): as text.
      }
    }
    last = m.index + t.length;
  }
  if (last < text.length) out.append(text.slice(last));
  return out;
}

function markdown(text) {
  const out = document.createDocumentFragment();
  const lines = String(text ?? '').split('\n');
  let para = [];
  let list = null;
  const flush = () => {
    if (para.length) {
      const p = el('p');
      p.append(inline(para.join(' ')));
      out.append(p);
      para = [];
    }
    list = null;
  };
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].trimEnd();
    const fence = line.match(/^\s*```\s*([\w+-]*)$/);
    if (fence) {
      flush();
      const body = [];
      for (i++; i < lines.length && !/^\s*```$/.test(lines[i].trimEnd()); i++) body.push(lines[i]);
      const code = el('code', body.join('\n'));
      if (fence[1]) code.dataset.lang = fence[1];
      const pre = el('pre');
      pre.append(code);
      out.append(pre);
      continue;
    }
    const heading = line.match(/^(#{1,6})\s+(.*)$/);
    const item = line.match(/^\s*(?:[-*+]|(\d+)[.)])\s+(.*)$/);
    if (heading) {
      flush();
      // Under the page's own h2/h3: h4 and below.
      const h = el(`h${Math.min(6, heading[1].length + 3)}`);
      h.append(inline(heading[2]));
      out.append(h);
    } else if (item) {
      if (para.length) flush();
      const kind = item[1] ? 'ol' : 'ul';
      if (!list || list.tagName.toLowerCase() !== kind) {
        list = el(kind);
        out.append(list);
      }
      const li = el('li');
      li.append(inline(item[2]));
      list.append(li);
    } else if (!line.trim()) {
      flush();
    } else {
      if (list) list = null;
      para.push(line.trim());
    }
  }
  flush();
  return out;
}

function row(cells) {
  const tr = el('tr');
  for (const c of cells) {
    const td = el('td');
    if (c instanceof Node) td.append(c);
    else td.textContent = c === null || c === undefined ? '' : String(c);
    tr.append(td);
  }
  return tr;
}

function showError(message) {
  const box = $('error');
  box.textContent = message;
  box.hidden = !message;
}

function when(ms) {
  return ms ? new Date(ms).toLocaleString() : '';
}

/// The credential requests carry: an access token or an API key.
function bearer() {
  return state.token || state.key;
}

function save() {
  const s = { refresh: state.refresh, key: state.key };
  sessionStorage.setItem('iris', JSON.stringify(s));
}

/// One refresh at a time: a refresh token is single-use, and the server
/// takes a second use as theft (it ends the whole sign-in).
function refreshToken() {
  if (!state.refreshing) {
    state.refreshing = doRefresh().finally(() => {
      state.refreshing = null;
    });
  }
  return state.refreshing;
}

async function doRefresh() {
  if (!state.refresh) return false;
  const r = await fetch(`${API}/auth/refresh`, {
    method: 'POST',
    headers: { authorization: `Bearer ${state.refresh}`, 'content-type': 'application/json' },
    body: '{}',
  });
  if (!r.ok) return false;
  const b = await r.json();
  state.token = b.accessToken;
  if (b.refreshToken) state.refresh = b.refreshToken;
  state.expiresAt = Date.now() + (b.expiresIn || 900) * 1000;
  save();
  return true;
}

/// One API call; the error body's message is shown and thrown.
async function api(method, path, body) {
  if (state.token && state.expiresAt - Date.now() < 30000) await refreshToken();
  const opts = { method, headers: { authorization: `Bearer ${bearer()}` } };
  if (body !== undefined) {
    opts.headers['content-type'] = 'application/json';
    opts.body = JSON.stringify(body);
  }
  let r = await fetch(API + path, opts);
  if (r.status === 401 && (await refreshToken())) {
    opts.headers.authorization = `Bearer ${bearer()}`;
    r = await fetch(API + path, opts);
  }
  const text = await r.text();
  const data = text ? JSON.parse(text) : {};
  if (!r.ok) {
    const message = data.message || `${r.status} ${r.statusText}`;
    showError(message);
    throw new Error(message);
  }
  showError('');
  return data;
}

// ---- sign in and out ----

async function signedIn() {
  $('signin').hidden = true;
  $('nav').hidden = false;
  await loadTeams();
  openEvents();
  show('teams');
}

$('login-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const f = new FormData(ev.target);
  const body = { username: f.get('username'), password: f.get('password') };
  if (f.get('mfaCode')) body.mfaCode = f.get('mfaCode');
  const r = await fetch(`${API}/auth/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  const b = await r.json();
  if (!r.ok || !b.accessToken) {
    showError(b.message || 'sign-in failed');
    return;
  }
  showError('');
  state.token = b.accessToken;
  state.refresh = b.refreshToken;
  state.expiresAt = Date.now() + (b.expiresIn || 900) * 1000;
  state.key = null;
  ev.target.reset();
  save();
  await signedIn();
});

$('key-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  state.key = new FormData(ev.target).get('key');
  state.token = null;
  state.refresh = null;
  try {
    await api('GET', '/teams');
  } catch {
    state.key = null;
    return;
  }
  ev.target.reset();
  save();
  await signedIn();
});

$('signout').addEventListener('click', async () => {
  // An access token that ran out while the page was idle would be refused.
  if (state.refresh && state.expiresAt - Date.now() < 30000) await refreshToken();
  if (state.refresh) {
    await fetch(`${API}/auth/logout`, {
      method: 'POST',
      headers: { authorization: `Bearer ${state.token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ refreshToken: state.refresh }),
    }).catch(() => {});
  }
  Object.assign(state, { token: null, refresh: null, key: null, expiresAt: 0 });
  sessionStorage.removeItem('iris');
  if (state.events) state.events.close();
  location.reload();
});

// ---- views ----

const loaders = {
  teams: loadTeams,
  chat: loadHistory,
  approvals: loadApprovals,
  jobs: loadJobs,
  keys: loadKeys,
  webhooks: loadWebhooks,
  audit: () => loadAudit(),
  health: loadHealth,
};

function show(view) {
  for (const s of document.querySelectorAll('.view')) s.hidden = s.id !== view;
  for (const b of document.querySelectorAll('#nav [data-view]')) {
    if (b.dataset.view === view) b.setAttribute('aria-current', 'page');
    else b.removeAttribute('aria-current');
  }
  const load = loaders[view];
  if (load) load().catch(() => {});
}

$('nav').addEventListener('click', (ev) => {
  const view = ev.target.closest('[data-view]');
  if (view) show(view.dataset.view);
});

async function loadTeams() {
  const data = await api('GET', '/teams?includeProcessDetails=true');
  state.teams = data.teams || [];
  const rows = $('team-rows');
  rows.replaceChildren();
  for (const t of state.teams) {
    // One process per conversation with the team.
    const procs = Array.isArray(t.process) ? t.process : [];
    const states = [...new Set(procs.map((x) => x.state))];
    const p = {
      state: procs.length ? `${t.status}: ${states.join(', ')}` : t.status,
      queued: procs.reduce((n, x) => n + (x.queued || 0), 0),
      pid: procs.map((x) => x.pid).filter(Boolean).join(' '),
      rss: procs.reduce((n, x) => n + (x.rssKib || 0), 0),
      lastUsed: Math.max(0, ...procs.map((x) => x.lastUsed || 0)),
    };
    const actions = el('span');
    const team = encodeURIComponent(t.name);
    for (const [label, path] of [['Wake', 'wake'], ['Sleep', 'sleep'], ['Reboot', 'reboot'], ['Fork', 'fork']]) {
      const b = el('button', label, { type: 'button', 'aria-label': `${label} ${t.name}` });
      b.addEventListener('click', () => api('POST', `/teams/${team}/${path}`, {}).then(loadTeams).catch(() => {}));
      actions.append(b, ' ');
    }
    const edit = el('button', 'Edit', { type: 'button', 'aria-label': `Edit ${t.name}` });
    edit.addEventListener('click', () => {
      const input = el('input', null, { 'aria-label': `New description of ${t.name}`, value: t.config?.description || '' });
      const save = el('button', 'Save', { type: 'button' });
      save.addEventListener('click', () => api('PATCH', `/teams/${team}`, { description: input.value }).then(loadTeams).catch(() => {}));
      edit.replaceWith(input, save);
    });
    const del = el('button', 'Delete', { type: 'button', 'aria-label': `Delete ${t.name}` });
    del.addEventListener('click', () => {
      if (confirm(`Delete the team ${t.name}?`)) api('DELETE', `/teams/${team}`, { force: true }).then(loadTeams).catch(() => {});
    });
    actions.append(edit, ' ', del);
    const memory = p.rss ? `${(p.rss / 1024).toFixed(1)} MiB` : '';
    rows.append(row([t.name, p.state || '', p.queued, p.pid, memory, when(p.lastUsed), actions]));
  }
  // What a new team may run, and where (the config file decides).
  const options = await api('GET', '/agent-profiles').catch(() => null);
  if (options) {
    const select = $('team-profile');
    const current = select.value;
    select.replaceChildren(...options.profiles.map((p) =>
      el('option', p.description ? `${p.name} — ${p.description}` : p.name, { value: p.name })));
    if (current) select.value = current;
    $('team-roots').textContent = options.teamRoots.length
      ? `Under: ${options.teamRoots.join(', ')}`
      : 'No teamRoots in the config file: teams can only be added there.';
  }
  loadGraph().catch(() => {});
  for (const select of [$('chat-team'), $('job-team')]) {
    const current = select.value;
    select.replaceChildren(...state.teams.map((t) => el('option', t.name)));
    if (current) select.value = current;
  }
}

// ---- teams at a glance: who messages whom (team_graph) ----

const SVG = 'http://www.w3.org/2000/svg';

function svg(tag, attrs, text) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = String(text);
  return e;
}

async function loadGraph() {
  const g = await api('GET', '/team-graph');
  const box = $('graph');
  box.replaceChildren();
  // Teams on a circle, callers that are not teams on an outer one.
  const place = new Map();
  const [cx, cy] = [320, 180];
  const teams = g.nodes.filter((n) => n.team);
  const others = g.nodes.filter((n) => !n.team);
  teams.forEach((n, i) => {
    const a = (2 * Math.PI * i) / Math.max(1, teams.length) - Math.PI / 2;
    place.set(n.name, [cx + 110 * Math.cos(a), cy + 110 * Math.sin(a)]);
  });
  others.forEach((n, i) => {
    const a = (2 * Math.PI * (i + 0.5)) / Math.max(1, others.length) - Math.PI / 2;
    place.set(n.name, [cx + 280 * Math.cos(a), cy + 160 * Math.sin(a)]);
  });
  const marker = svg('marker', { id: 'arrow', viewBox: '0 0 10 10', refX: 22, refY: 5, markerWidth: 6, markerHeight: 6, orient: 'auto' });
  marker.append(svg('path', { d: 'M0,0 L10,5 L0,10 z', fill: '#4b5563' }));
  const defs = svg('defs', {});
  defs.append(marker);
  box.append(defs);
  for (const e of g.edges) {
    const [x1, y1] = place.get(e.from) || [cx, cy];
    const [x2, y2] = place.get(e.to) || [cx, cy];
    const line = svg('line', { x1, y1, x2, y2, class: e.open ? 'edge open' : 'edge', 'stroke-width': Math.min(8, 1 + Math.log2(e.count + 1)), 'marker-end': 'url(#arrow)' });
    line.dataset.from = e.from;
    line.dataset.to = e.to;
    box.append(line, svg('text', { x: (x1 + x2) / 2, y: (y1 + y2) / 2 - 4, class: 'count' }, e.count));
  }
  for (const n of g.nodes) {
    const [x, y] = place.get(n.name);
    const node = svg('g', { class: `node${n.team ? ' team' : ' caller'}${n.busy ? ' busy' : ''}` });
    node.dataset.name = n.name;
    node.append(svg('circle', { cx: x, cy: y, r: 18 }), svg('text', { x, y: y + 32, 'text-anchor': 'middle' }, n.name));
    box.append(node);
  }
  $('graph-edges').replaceChildren(...(g.edges.length
    ? g.edges.map((e) => el('li', `${e.from} → ${e.to}: ${e.count} message${e.count === 1 ? '' : 's'}${e.open ? `, ${e.open} open` : ''}`))
    : [el('li', 'No messages in the last hour.')]));
}

// The graph follows the messages while the teams are shown.
setInterval(() => {
  if (bearer() && !$('teams').hidden) loadGraph().catch(() => {});
}, 3000);

$('team-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const f = new FormData(ev.target);
  const body = { name: f.get('name'), path: f.get('path'), profile: f.get('profile') };
  if (f.get('description')) body.description = f.get('description');
  const made = await api('POST', '/teams', body).catch(() => null);
  if (made) {
    ev.target.reset();
    await loadTeams();
  }
});

// ---- a live conversation ----

let chatSocket = null;

function streamSocket() {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}${API}/stream`);
    ws.onopen = () => ws.send(JSON.stringify({ type: 'auth', token: bearer() }));
    ws.onerror = () => reject(new Error('the stream could not connect'));
    ws.onmessage = (m) => {
      const v = JSON.parse(m.data);
      if (v.type === 'authenticated') resolve(ws);
      else if (v.type === 'error') reject(new Error(v.error?.message || 'refused'));
    };
  });
}

$('chat-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const f = new FormData(ev.target);
  const team = f.get('team');
  $('chat-answer').replaceChildren();
  $('chat-plan').replaceChildren();
  $('chat-plan').hidden = true;
  liveText = null;
  $('chat-approvals').replaceChildren();
  $('chat-status').textContent = 'sending…';
  try {
    chatSocket = await streamSocket();
  } catch (e) {
    showError(e.message);
    return;
  }
  chatSocket.onmessage = (m) => {
    const v = JSON.parse(m.data);
    if (v.type === 'start') {
      state.chatTurn = v.messageId;
      $('chat-status').textContent = `running (${v.messageId})`;
      loadApprovals().catch(() => {});
    }
    else if (v.type === 'chunk') liveChunk(v.text || '');
    else if (v.type === 'tool_use') {
      // The card goes where the agent used the tool; its text goes on after it.
      $('chat-answer').append(toolCard(v));
      liveText = null;
    } else if (v.type === 'plan') {
      // The whole plan each time: shown in place of the last one.
      $('chat-plan').replaceChildren(...(Array.isArray(v.entries) ? v.entries : []).map((e) => el('li', `${e.content} (${e.status})`, { class: `plan-${e.status}` })));
      $('chat-plan').hidden = false;
    } else if (v.type === 'tool_result') {
      const card = [...$('chat-answer').querySelectorAll('details.tool')].find((d) => d.dataset.toolId === v.id);
      if (card) toolResult(card, v);
    } else if (v.type === 'complete') {
      // Each stretch of text, rendered (it streamed in as text).
      for (const seg of $('chat-answer').querySelectorAll('.segment')) {
        const done = el('div', null, { class: 'segment' });
        done.append(markdown(seg.textContent));
        seg.replaceWith(done);
      }
      liveText = null;
      $('chat-status').textContent = `${v.status} in ${v.duration} ms`;
      chatSocket.close();
      loadHistory().catch(() => {});
    } else if (v.type === 'error') {
      $('chat-status').textContent = 'failed';
      showError(v.error?.message || v.error || 'the turn failed');
      chatSocket.close();
    }
  };
  chatSocket.send(JSON.stringify({ type: 'message', team, message: f.get('message') }));
});

$('chat-team').addEventListener('change', () => loadHistory().catch(() => {}));

// Fork or reboot the caller's conversation with the chosen team.
for (const [id, path] of [['chat-fork', 'fork'], ['chat-reboot', 'reboot']]) {
  $(id).addEventListener('click', () => {
    const team = encodeURIComponent($('chat-team').value);
    api('POST', `/teams/${team}/${path}`, {})
      .then((r) => { $('chat-status').textContent = `${path === 'fork' ? 'forked into' : 'rebooted: now'} ${r.sessionId || r.newSessionId || ''}`; })
      .then(loadHistory)
      .catch(() => {});
  });
}

$('chat-cancel').addEventListener('click', () => {
  if (chatSocket && chatSocket.readyState === WebSocket.OPEN) {
    chatSocket.send(JSON.stringify({ type: 'cancel', team: $('chat-team').value }));
  }
});

// The live answer: stretches of text with tool cards between them.
let liveText = null;
function liveChunk(text) {
  if (!liveText) {
    liveText = el('div', null, { class: 'segment' });
    $('chat-answer').append(liveText);
  }
  liveText.textContent += text;
}

// A tool use as a card: its name (and, once back, how long it took and
// whether it failed), opened for its input and output.
function toolCard(v) {
  const d = el('details', null, { class: 'tool' });
  d.dataset.toolId = v.id ?? '';
  const summary = el('summary');
  summary.append(el('span', v.name || v.tool || 'tool', { class: 'tool-name' }), el('span', '', { class: 'tool-took' }));
  d.append(summary, el('pre', JSON.stringify(v.input ?? {}, null, 2), { 'aria-label': 'input' }));
  if (v.output != null) toolResult(d, v);
  return d;
}

function toolResult(card, r) {
  const took = [];
  if (r.durationMs != null) took.push(`${r.durationMs} ms`);
  if (r.isError) { took.push('failed'); card.classList.add('failed'); }
  card.querySelector('.tool-took').textContent = took.length ? ` · ${took.join(' · ')}` : '';
  card.querySelector('pre.output')?.remove();
  const out = `${r.output ?? ''}${r.truncated ? '\n… (cut)' : ''}`;
  card.append(el('pre', out || '(no output)', { class: 'output', 'aria-label': 'output' }));
}

function showMessages(messages) {
  $('chat-history').replaceChildren(...(messages || []).map((m) => {
    const li = el('li');
    const asked = el('p', null, { class: 'asked' });
    asked.append(el('strong', `${m.from ?? 'you'}: `), m.request);
    const answer = el('div', null, { class: 'answer' });
    if (m.response) answer.append(markdown(m.response));
    else answer.append(el('em', m.error ? `${m.status}: ${m.error}` : m.status));
    const tools = el('ul', null, { class: 'tools' });
    for (const t of m.toolUses || []) {
      const item = el('li', null, { class: 'tool' });
      item.append(toolCard(t));
      tools.append(item);
    }
    // How it went: status, time, tokens, cost, and the chain of teams.
    const facts = [m.status];
    if (m.duration != null) facts.push(`${m.duration} ms`);
    if (m.usage && m.usage.input_tokens != null) facts.push(`${m.usage.input_tokens} in / ${m.usage.output_tokens ?? 0} out tokens`);
    if (m.costUsd != null) facts.push(`$${Number(m.costUsd).toFixed(4)}`);
    if (Array.isArray(m.chain) && m.chain.length > 1) facts.push(`via ${m.chain.join(' → ')}`);
    li.append(asked, tools, answer, el('p', facts.join(' · '), { class: 'facts' }));
    return li;
  }));
}

async function loadHistory() {
  const team = $('chat-team').value;
  if (!team) return;
  const r = await api('GET', `/teams/${encodeURIComponent(team)}/report?limit=20`);
  showMessages(r.messages);
  await loadConversations(team);
}

// The team's conversations (session_list): open one's messages, or see
// what its agent changed in its worktree (session_diff).
async function loadConversations(team) {
  const data = await api('GET', `/teams/${encodeURIComponent(team)}/conversations?limit=50`);
  const rows = $('conv-rows');
  rows.replaceChildren();
  for (const c of data.conversations || []) {
    const id = encodeURIComponent(c.sessionId);
    const actions = el('span');
    const open = el('button', 'Open', { type: 'button', 'aria-label': `Open the conversation of ${c.from}` });
    open.addEventListener('click', () => api('GET', `/cache/${id}?limit=50`).then((r) => showMessages(r.messages)).catch(() => {}));
    actions.append(open);
    if (c.branch) {
      const changes = el('button', 'Changes', { type: 'button', 'aria-label': `Changes on ${c.branch}` });
      changes.addEventListener('click', () => api('GET', `/cache/${id}/diff`).then(showChanges).catch(() => {}));
      actions.append(' ', changes);
    }
    rows.append(row([c.from, when(c.lastUsedAt), c.turns, c.lastStatus || '', c.costUsd.toFixed(4), c.branch || '', actions]));
  }
}

function showChanges(d) {
  for (const id of ['conv-changes-title', 'conv-files', 'conv-changes']) $(id).hidden = false;
  $('conv-files').replaceChildren(...d.files.map((f) =>
    el('li', `${f.path} (${f.status}${f.additions === undefined ? ', binary' : `, +${f.additions} −${f.deletions}`})`)));
  const omitted = d.omitted.length ? `\n(not shown, too large: ${d.omitted.join(', ')})` : '';
  // Text only (what an agent wrote is never markup here), a line each,
  // added and removed lines marked.
  const pre = $('conv-changes');
  pre.replaceChildren();
  for (const line of (d.diff + omitted).split('\n')) {
    let cls = '';
    if (line.startsWith('+') && !line.startsWith('+++')) cls = 'add';
    else if (line.startsWith('-') && !line.startsWith('---')) cls = 'del';
    else if (line.startsWith('@@')) cls = 'hunk';
    else if (line.startsWith('diff --git')) cls = 'file';
    pre.append(el('span', `${line}\n`, cls ? { class: cls } : {}));
  }
}

// ---- approvals, live ----

// A pending approval with Allow and Deny (and a reason).
function approvalCard(a, where) {
  const li = el('li', null, { class: 'approval' });
  li.append(el('strong', `${a.team}: ${a.toolName}`), el('pre', JSON.stringify(a.input, null, 2)));
  const reason = el('input', null, { 'aria-label': `Reason for ${a.id} (${where})`, placeholder: 'reason (optional)' });
  li.append(reason);
  for (const decision of ['allow', 'deny']) {
    const b = el('button', decision === 'allow' ? 'Allow' : 'Deny', { type: 'button' });
    b.addEventListener('click', () =>
      api('POST', `/approvals/${encodeURIComponent(a.id)}`, { decision, reason: reason.value || undefined })
        .then(loadApprovals)
        .catch(() => {}),
    );
    li.append(' ', b);
  }
  return li;
}

async function loadApprovals() {
  const data = await api('GET', '/approvals?status=pending');
  $('pending').textContent = data.approvals.length || '';
  $('approval-list').replaceChildren(...data.approvals.map((a) => approvalCard(a, 'approvals')));
  // Those of the turn the conversation view follows, in its place there.
  $('chat-approvals').replaceChildren(...data.approvals
    .filter((a) => state.chatTurn && a.turnId === state.chatTurn)
    .map((a) => approvalCard(a, 'conversation')));
}

/// Lifecycle events of every team the caller sees (JSON-RPC /ws, topic
/// `system`): approvals and jobs refresh as soon as something happens.
function openEvents() {
  const ws = new WebSocket(`${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`);
  state.events = ws;
  ws.onopen = () => ws.send(JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'auth', params: { token: bearer() } }));
  ws.onmessage = (m) => {
    const v = JSON.parse(m.data);
    if (v.id === 1 && v.result) {
      ws.send(JSON.stringify({ jsonrpc: '2.0', id: 2, method: 'subscribe', params: { events: ['system'] } }));
      return;
    }
    const kind = v.params?.event?.kind || '';
    if (kind.startsWith('approval_')) loadApprovals().catch(() => {});
    if (kind.startsWith('job_') && !$('jobs').hidden) loadJobs().catch(() => {});
    if (kind.startsWith('process_') && !$('teams').hidden) loadTeams().catch(() => {});
  };
  // The server keeps this connection across token refreshes (it lives as
  // long as the sign-in); one that dropped comes back with a fresh token.
  ws.onclose = () => {
    if (!bearer()) return;
    setTimeout(async () => {
      if (state.refresh && state.expiresAt - Date.now() < 30000) await refreshToken();
      if (bearer()) openEvents();
    }, 2000);
  };
}

// ---- webhook subscriptions and their deliveries ----

// Redeliver for a delivery that failed or was given up (else nothing);
// `after` runs once it is queued again.
function redeliver(x, after) {
  if (x.status === 'delivered' || x.status === 'pending') return '';
  const b = el('button', 'Redeliver', { type: 'button', 'aria-label': `Redeliver ${x.event} ${x.id}` });
  b.addEventListener('click', () => api('POST', `/admin/webhook-deliveries/${encodeURIComponent(x.id)}/redeliver`, {}).then(after).catch(() => {}));
  return b;
}

function deliveryRow(x, again) {
  return row([x.event, x.status, `${x.attempts} / ${x.maxAttempts}`, x.lastError || '', redeliver(x, again)]);
}

async function loadWebhooks() {
  const data = await api('GET', '/admin/webhooks');
  const rows = $('webhook-rows');
  rows.replaceChildren();
  for (const w of data.webhooks) {
    const id = encodeURIComponent(w.id);
    const actions = el('span');
    const show = el('button', 'Deliveries', { type: 'button', 'aria-label': `Deliveries to ${w.url}` });
    const again = () => api('GET', `/admin/webhooks/${id}/deliveries?limit=50`)
      .then((r) => $('delivery-rows').replaceChildren(...r.deliveries.map((x) => deliveryRow(x, again))));
    show.addEventListener('click', () => again().catch(() => {}));
    const del = el('button', 'Delete', { type: 'button', 'aria-label': `Delete the subscription to ${w.url}` });
    del.addEventListener('click', () => api('DELETE', `/admin/webhooks/${id}`).then(loadWebhooks).catch(() => {}));
    actions.append(show, ' ', del);
    rows.append(row([w.url, w.events.join(', '), w.active ? 'yes' : 'no', when(w.createdAt), actions]));
  }
}

$('webhook-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const f = new FormData(ev.target);
  const body = { url: f.get('url'), events: String(f.get('events')).split(',').map((e) => e.trim()).filter(Boolean) };
  if (f.get('description')) body.description = f.get('description');
  const made = await api('POST', '/admin/webhooks', body).catch(() => null);
  if (made) {
    ev.target.reset();
    $('webhook-secret-value').textContent = made.secret || '';
    $('webhook-secret').hidden = !$('webhook-secret-value').textContent;
    await loadWebhooks();
  }
});

$('audit-verify').addEventListener('click', async () => {
  const v = await api('GET', '/admin/audit-logs/verify').catch(() => null);
  if (v) $('audit-verdict').textContent = v.ok
    ? `The chain verifies: ${v.records} records, none changed or missing.`
    : `The chain does not verify${v.badSeq != null ? ` at record ${v.badSeq}` : ''}: ${v.problem || 'unknown problem'}`;
});

// ---- jobs ----

$('job-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const f = new FormData(ev.target);
  await api('POST', `/teams/${encodeURIComponent(f.get('team'))}/execute`, { task: f.get('task') }).catch(() => {});
  ev.target.reset();
  await loadJobs();
});

async function loadJobs() {
  const data = await api('GET', '/jobs?limit=50');
  const rows = $('job-rows');
  rows.replaceChildren();
  for (const j of data.jobs) {
    const d = el('button', 'Show', { type: 'button', 'aria-label': `Show the deliveries of ${j.jobId}` });
    d.addEventListener('click', async () => {
      const r = await api('GET', `/jobs/${encodeURIComponent(j.jobId)}/deliveries`);
      const list = el('span', r.deliveries.length ? null : 'none');
      for (const x of r.deliveries) {
        list.append(`${x.status} after ${x.attempts} attempt(s) `, redeliver(x, loadJobs), ' ');
      }
      d.replaceWith(list);
    });
    rows.append(row([j.jobId, j.team, j.status, j.position ?? '', j.result ?? j.error ?? '', d]));
  }
}

// ---- keys and users ----

$('newkey-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const f = new FormData(ev.target);
  const r = await api('POST', '/admin/keys', { name: f.get('name'), role: f.get('role') }).catch(() => null);
  if (!r) return;
  $('newkey-value').textContent = r.key;
  $('newkey').hidden = false;
  ev.target.reset();
  await loadKeys();
});

$('copy-key').addEventListener('click', () => navigator.clipboard?.writeText($('newkey-value').textContent));

async function loadKeys() {
  const data = await api('GET', '/admin/keys');
  const rows = $('key-rows');
  rows.replaceChildren();
  for (const k of data.keys) {
    const revoke = el('button', 'Revoke', { type: 'button', 'aria-label': `Revoke ${k.name}` });
    revoke.addEventListener('click', () => api('POST', `/admin/keys/${encodeURIComponent(k.id)}/revoke`, {}).then(loadKeys).catch(() => {}));
    const rotate = el('button', 'Rotate', { type: 'button', 'aria-label': `Rotate ${k.name}` });
    rotate.addEventListener('click', async () => {
      const r = await api('POST', `/admin/keys/${encodeURIComponent(k.id)}/rotate`, {}).catch(() => null);
      if (r?.key) {
        $('newkey-value').textContent = r.key;
        $('newkey').hidden = false;
      }
      await loadKeys();
    });
    const actions = el('span');
    actions.append(revoke, ' ', rotate);
    rows.append(row([k.name, k.prefix, k.role || (k.scopes || []).join(' '), k.status || (k.revokedAt ? 'revoked' : 'active'), actions]));
  }
  const users = await api('GET', '/admin/users').catch(() => ({ users: [] }));
  const rows2 = $('user-rows');
  rows2.replaceChildren();
  for (const u of users.users) {
    const name = u.username || u.email;
    const role = el('select', null, { 'aria-label': `Role of ${name}` });
    for (const r of ['viewer', 'operator', 'developer', 'admin']) role.append(el('option', r));
    role.value = (u.roles || [])[0] || 'viewer';
    role.addEventListener('change', () => api('PATCH', `/admin/users/${encodeURIComponent(u.id)}`, { roles: [role.value] }).then(loadKeys).catch(() => {}));
    const reset = el('button', 'Reset MFA', { type: 'button', 'aria-label': `Reset MFA of ${name}` });
    reset.addEventListener('click', () => api('POST', `/admin/users/${encodeURIComponent(u.id)}/mfa/reset`, {}).then(loadKeys).catch(() => {}));
    const actions = el('span');
    actions.append(role, ' ', reset);
    rows2.append(row([name, (u.roles || []).join(' '), u.status, u.mfaEnabled ? 'on' : 'off', actions]));
  }
}

$('user-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const f = new FormData(ev.target);
  const made = await api('POST', '/admin/users', { username: f.get('username'), password: f.get('password'), role: f.get('role') }).catch(() => null);
  if (made) {
    ev.target.reset();
    await loadKeys();
  }
});

// ---- audit and health ----

$('audit-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const f = new FormData(ev.target);
  loadAudit(f.get('action'), f.get('result')).catch(() => {});
});

async function loadAudit(action, result) {
  const q = new URLSearchParams({ limit: '100' });
  if (action) q.set('action', action);
  if (result) q.set('result', result);
  const data = await api('GET', `/admin/audit-logs?${q}`);
  $('audit-rows').replaceChildren(...data.logs.map((l) => row([l.timestamp, l.actor, l.action, l.team || l.resource || '', l.result])));
}

/// The health view's logs follow what happens while it is open.
setInterval(() => {
  if (bearer() && !$('health').hidden) {
    api('GET', '/logs?limit=50')
      .then((logs) => {
        $('logs').textContent = logs.logs
          .map((l) => `${when(l.timestamp)} ${l.level} ${l.message} ${l.fields ? JSON.stringify(l.fields) : ''}`)
          .join('\n');
      })
      .catch(() => {});
  }
}, 3000);

async function loadHealth() {
  const r = await fetch('/health/detailed', { headers: { authorization: `Bearer ${bearer()}` } });
  $('health-body').textContent = JSON.stringify(await r.json(), null, 2);
  const logs = await api('GET', '/logs?limit=50').catch(() => ({ logs: [] }));
  $('logs').textContent = logs.logs
    .map((l) => `${when(l.timestamp)} ${l.level} ${l.message} ${l.fields ? JSON.stringify(l.fields) : ''}`)
    .join('\n');
  const since = Date.now() - 3600000;
  // A page holds 500 at most (the API's limit): up to ten pages.
  const messages = [];
  for (let page = 1; page <= 10; page += 1) {
    const hist = await api('GET', `/messages/history?limit=500&page=${page}&since=${since}`).catch(() => null);
    if (!hist) break;
    messages.push(...hist.messages);
    if (!hist.pagination?.hasNext) break;
  }
  drawChart(messages, since);
}

/// Turns per minute over the last hour, with their mean latency as a line.
function drawChart(messages, since) {
  const c = $('turn-chart');
  const g = c.getContext('2d');
  const n = 60;
  const buckets = Array.from({ length: n }, () => ({ n: 0, ms: 0, bad: 0 }));
  for (const m of messages) {
    const i = Math.min(n - 1, Math.floor((m.createdAt - since) / 60000));
    if (i < 0) continue;
    buckets[i].n += 1;
    buckets[i].ms += m.duration || 0;
    if (['failed', 'cancelled', 'timed_out'].includes(m.status)) buckets[i].bad += 1;
  }
  g.clearRect(0, 0, c.width, c.height);
  const max = Math.max(1, ...buckets.map((b) => b.n));
  const w = c.width / n;
  g.fillStyle = '#6366f1';
  buckets.forEach((b, i) => {
    const h = (b.n / max) * (c.height - 10);
    g.fillStyle = '#6366f1';
    g.fillRect(i * w + 1, c.height - h, w - 2, h);
    // The turns that did not complete, at the foot of the bar.
    const e = (b.bad / max) * (c.height - 10);
    g.fillStyle = '#dc2626';
    g.fillRect(i * w + 1, c.height - e, w - 2, e);
  });
  const total = buckets.reduce((n, b) => n + b.n, 0);
  const bad = buckets.reduce((n, b) => n + b.bad, 0);
  const ms = buckets.reduce((n, b) => n + b.ms, 0);
  const busiest = Math.max(...buckets.map((b) => b.n));
  $('turn-summary').textContent = `${total} turns in the last hour (bars: turns per minute, busiest ${busiest}), ${bad} failed, cancelled or timed out (red); mean latency ${total ? Math.round(ms / total) : 0} ms (line).`;
  const lat = buckets.map((b) => (b.n ? b.ms / b.n : 0));
  const maxLat = Math.max(1, ...lat);
  g.strokeStyle = '#f59e0b';
  g.beginPath();
  lat.forEach((l, i) => {
    const y = c.height - (l / maxLat) * (c.height - 10);
    if (i === 0) g.moveTo(w / 2, y);
    else g.lineTo(i * w + w / 2, y);
  });
  g.stroke();
}

// ---- start ----

(async () => {
  const saved = JSON.parse(sessionStorage.getItem('iris') || '{}');
  if (saved.key) {
    state.key = saved.key;
  } else if (saved.refresh) {
    state.refresh = saved.refresh;
    if (!(await refreshToken())) return;
  } else {
    return;
  }
  try {
    await signedIn();
  } catch {
    sessionStorage.removeItem('iris');
  }
})();
