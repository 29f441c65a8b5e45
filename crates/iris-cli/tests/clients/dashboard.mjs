// The dashboard in a real browser (Debian's chromium through playwright-core),
// against a live `iris serve` with an `echo` team `demo`
// (crates/iris-cli/tests/dashboard.rs starts it and creates the user):
//
//   node dashboard.mjs BASE USERNAME PASSWORD SCREENSHOT_DIR TEAM_FOLDER
//
// TEAM_FOLDER: a folder under the server's teamRoots, for a team made here.
// A wrong password is refused; sign in; see the teams; send a message and
// watch the answer grow; create a key, see it once, revoke it, and the API
// refuses it; run a job and see it complete; read the audit log. Prints
// one line per check; exits 1 at the first failure. Screenshots of the
// main pages go to SCREENSHOT_DIR.
import { chromium } from 'playwright-core';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';

// axe-core (Deque's accessibility rules engine, pinned in package.json),
// evaluated in the page through the DevTools protocol: the page's CSP
// does not let in an injected script tag.
const axeSource = readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');

const [base, username, password, shots, teamFolder, hookUrl, mode] = process.argv.slice(2);

function check(cond, what) {
  if (!cond) {
    console.error(`FAILED: ${what}`);
    process.exit(1);
  }
  console.log(`ok ${what}`);
}

// No serious or critical accessibility violation in the view shown now.
async function accessible(page, view) {
  if (!(await page.evaluate(() => typeof window.axe !== 'undefined'))) {
    await page.evaluate(`${axeSource}\n;undefined`);
  }
  const found = await page.evaluate(async () => {
    const r = await window.axe.run(document, { resultTypes: ['violations'] });
    return r.violations
      .filter((v) => v.impact === 'serious' || v.impact === 'critical')
      .map((v) => `${v.id} (${v.impact}): ${v.nodes.slice(0, 3).map((n) => n.target.join(' ')).join(', ')}`);
  });
  check(found.length === 0, `${view}: no serious or critical accessibility violations${found.length ? `: ${found.join('; ')}` : ''}`);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox'],
});
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 860 } });
  const outside = [];
  page.on('request', (r) => {
    if (!r.url().startsWith(base) && !r.url().startsWith(base.replace('http', 'ws'))) outside.push(r.url());
  });
  const problems = [];
  page.on('pageerror', (e) => problems.push(e.message));

  const res = await page.goto(`${base}/ui`);
  check(res.status() === 200, 'the dashboard page loads without a credential');
  const csp = res.headers()['content-security-policy'] || '';
  check(/default-src 'none'/.test(csp) && /script-src 'self'/.test(csp), `its CSP allows only its own origin: ${csp}`);

  await accessible(page, 'the sign-in page');
  // A wrong password: the error body's message, no sign-in.
  await page.fill('#login-form input[name=username]', username);
  await page.fill('#login-form input[name=password]', 'not-the-password-1A!');
  await page.click('#login-form button[type=submit]');
  await page.waitForSelector('#error:not([hidden])');
  check(/invalid|password|credentials/i.test(await page.textContent('#error')), `a wrong password is refused: ${await page.textContent('#error')}`);
  check(await page.isHidden('#nav'), 'nothing is shown after a refused sign-in');

  await page.fill('#login-form input[name=password]', password);
  await page.click('#login-form button[type=submit]');
  await page.waitForSelector('#nav:not([hidden])');
  if (mode === 'restarted') {
    // Iris was restarted: the team's conversations are still listed, and open.
    await page.click('#nav [data-view=chat]');
    await page.selectOption('#chat-team', 'demo');
    await page.waitForFunction(() => /completed/.test(document.getElementById('conv-rows').textContent));
    await page.click('#conv-rows tr:has(td:text-is("ada")) button:has-text("Open")');
    await page.waitForFunction(() => /the answer arrives word by word/.test(document.getElementById('chat-history').textContent));
    check(true, 'after a restart the conversations are listed and open');
  } else {
  await page.waitForSelector('#team-rows tr');
  check((await page.textContent('#team-rows')).includes('demo'), 'signed in: the teams are listed');
  check(!page.url().includes('token') && !page.url().includes(password), 'no credential in the URL');
  // Who messages whom: the message guarded → demo the test sent first.
  await page.waitForSelector('#graph line[data-from="guarded"][data-to="demo"]', { state: 'attached' });
  const edges = await page.textContent('#graph-edges');
  check(edges.includes('guarded → demo: 1 message'), `the teams graph shows who messaged whom: ${edges}`);
  check(await page.evaluate(() => document.querySelectorAll('#graph g.node.team').length >= 2), 'each team is a node');
  check(/\d+\.\d MiB/.test(await page.textContent('#team-rows')), 'a running process shows its memory');
  await accessible(page, 'teams');
  await page.screenshot({ path: `${shots}/dashboard-teams.png` });

  // A conversation: the answer grows as the agent writes it.
  await page.click('#nav [data-view=chat]');
  await page.selectOption('#chat-team', 'demo');
  await page.fill('#chat-form textarea', 'the answer arrives word by word [[delay=120]]');
  await page.click('#chat-form button[type=submit]');
  await page.waitForFunction(() => document.getElementById('chat-answer').textContent.length > 0);
  const partial = await page.textContent('#chat-answer');
  await page.waitForFunction(() => /completed/.test(document.getElementById('chat-status').textContent));
  const full = await page.textContent('#chat-answer');
  check(full === 'the answer arrives word by word', `the answer: ${full}`);
  check(partial.length < full.length, `it grew while streaming (first seen: "${partial}")`);
  // An agent's plan, shown above the answer and updated in place.
  await page.fill('#chat-form textarea', 'planned [[plan=look around|answer]]');
  await page.click('#chat-form button[type=submit]');
  await page.waitForFunction(() => /completed/.test(document.getElementById('chat-status').textContent)
    && document.getElementById('chat-answer').textContent === 'planned');
  const plan = await page.$$eval('#chat-plan li', (l) => l.map((i) => `${i.className}:${i.textContent}`));
  check(plan.join(',') === 'plan-completed:look around (completed),plan-completed:answer (completed)', `the plan is shown: ${plan}`);
  await page.waitForSelector('#chat-history li');
  // An answer in markdown is rendered; HTML in it stays text.
  const md = [
    '# Title', '', 'Some **bold**, `code`, a [link](https://example.com/x) and [another](javascript:window.pwned=3).',
    '', '```rust', 'let x = 1 < 2;', '```', '', '- one', '- two', '',
    '<script>window.pwned=1</script><img src=x onerror="window.pwned=2">',
  ].join('\n');
  await page.fill('#chat-form textarea', md);
  await page.click('#chat-form button[type=submit]');
  await page.waitForSelector('#chat-answer h4');
  const rendered = await page.evaluate(() => {
    const a = document.getElementById('chat-answer');
    return {
      h: a.querySelector('h4')?.textContent,
      strong: a.querySelector('strong')?.textContent,
      code: a.querySelector('p code')?.textContent,
      block: a.querySelector('pre code')?.textContent,
      lang: a.querySelector('pre code')?.dataset.lang,
      links: [...a.querySelectorAll('a')].map((x) => x.getAttribute('href')),
      items: a.querySelectorAll('ul li').length,
      script: a.querySelectorAll('script').length,
      img: a.querySelectorAll('img').length,
      text: a.textContent,
      pwned: window.pwned,
    };
  });
  check(rendered.h === 'Title' && rendered.strong === 'bold' && rendered.code === 'code', `markdown rendered: ${JSON.stringify(rendered)}`);
  check(rendered.block === 'let x = 1 < 2;' && rendered.lang === 'rust', `a code block: ${JSON.stringify(rendered)}`);
  check(rendered.links.length === 1 && rendered.links[0] === 'https://example.com/x', `only http(s) links: ${rendered.links}`);
  check(rendered.items === 2, 'a list');
  check(rendered.script === 0 && rendered.img === 0 && rendered.pwned === undefined, 'no markup from the agent runs');
  check(rendered.text.includes('<script>window.pwned=1</script>') && rendered.text.includes('onerror='), 'it is shown as text');
  await page.waitForFunction(() => document.querySelectorAll('#chat-history .answer h4').length > 0);
  check(await page.evaluate(() => document.querySelectorAll('#chat-history script, #chat-history img').length === 0), 'earlier turns render the same way');

  // The team's conversations, each openable.
  await page.waitForFunction(() => /completed/.test(document.getElementById('conv-rows').textContent));
  const convs = await page.textContent('#conv-rows');
  check(convs.includes('completed'), `the conversation is listed: ${convs}`);
  await page.evaluate(() => { document.getElementById('chat-history').replaceChildren(); });
  await page.click('#conv-rows button:has-text("Open")');
  await page.waitForSelector('#chat-history li');
  check((await page.textContent('#chat-history')).includes('the answer arrives word by word'), 'an opened conversation shows its messages');
  // A worktree conversation: what its agent changed, from the list.
  await page.selectOption('#chat-team', 'editor');
  await page.fill('#chat-form textarea', 'changed from the browser');
  await page.click('#chat-form button[type=submit]');
  await page.waitForFunction(() => /completed/.test(document.getElementById('chat-status').textContent));
  await page.waitForFunction(() => /iris\//.test(document.getElementById('conv-rows').textContent));
  await page.click('#conv-rows button:has-text("Changes")');
  await page.waitForSelector('#conv-changes:not([hidden])');
  const files = await page.textContent('#conv-files');
  const diff = await page.textContent('#conv-changes');
  check(files.includes('notes.txt (modified, +1 −1)') && diff.includes('-original') && diff.includes('+changed from the browser'),
    `a worktree conversation's changes are shown: ${files} ${diff}`);
  await accessible(page, 'conversation');
  await page.screenshot({ path: `${shots}/dashboard-conversation.png` });

  // A team created at run time, then deleted.
  await page.click('#nav [data-view=teams]');
  await page.fill('#team-form input[name=name]', 'made-here');
  await page.fill('#team-form input[name=path]', teamFolder);
  await page.waitForSelector('#team-form select[name=profile] option[value=echo]', { state: 'attached' });
  await page.selectOption('#team-form select[name=profile]', 'echo');
  await page.click('#team-form button[type=submit]');
  await page.waitForSelector('button[aria-label="Delete made-here"]');
  check(true, 'a team is created from the page');
  page.once('dialog', (d) => d.accept());
  await page.click('button[aria-label="Delete made-here"]');
  await page.waitForFunction(() => !document.getElementById('team-rows').textContent.includes('made-here'));
  check(true, 'and deleted');

  // Keys: shown once, revoked, then refused by the API.
  await page.click('#nav [data-view=keys]');
  await page.fill('#newkey-form input[name=name]', 'made-in-the-browser');
  await page.click('#newkey-form button[type=submit]');
  await page.waitForSelector('#newkey:not([hidden])');
  const key = (await page.textContent('#newkey-value')).trim();
  check(key.startsWith('iris_sk_'), 'a new key is shown once');
  const use = () => fetch(`${base}/api/v1/teams`, { headers: { authorization: `Bearer ${key}` } }).then((r) => r.status);
  check((await use()) === 200, 'the new key works');
  await page.waitForSelector('#key-rows tr');
  // A user created, given a role.
  await page.fill('#user-form input[name=username]', 'grace');
  await page.fill('#user-form input[name=password]', 'Another-Long-Pass-7?');
  await page.click('#user-form button[type=submit]');
  await page.waitForSelector('select[aria-label="Role of grace"]');
  await page.selectOption('select[aria-label="Role of grace"]', 'developer');
  await page.waitForFunction(() => /grace\s*developer/.test(document.getElementById('user-rows').textContent));
  check(true, 'a user is created and given a role');
  await page.click('button[aria-label="Reset MFA of grace"]');
  await accessible(page, 'keys and users');
  await page.screenshot({ path: `${shots}/dashboard-keys.png` });
  await page.click('button[aria-label="Revoke made-in-the-browser"]');
  let status = 0;
  for (let i = 0; i < 50 && status !== 401; i += 1) {
    status = await use();
    if (status !== 401) await new Promise((r) => setTimeout(r, 100));
  }
  check(status === 401, 'revoked: the API refuses the key');

  // A webhook subscription for jobs' ends (its receiver refuses twice).
  await page.click('#nav [data-view=webhooks]');
  await page.fill('#webhook-form input[name=url]', hookUrl);
  await page.fill('#webhook-form input[name=events]', 'job.completed');
  await page.click('#webhook-form button[type=submit]');
  await page.waitForSelector('#webhook-secret:not([hidden])');
  check((await page.textContent('#webhook-secret-value')).length >= 16 && (await page.textContent('#webhook-rows')).includes(hookUrl),
    'a webhook subscription is made, its secret shown once');
  await accessible(page, 'webhooks');

  // A job, followed to its end.
  await page.click('#nav [data-view=jobs]');
  await page.selectOption('#job-team', 'demo');
  await page.fill('#job-form input[name=task]', 'a job from the browser');
  await page.click('#job-form button[type=submit]');
  await page.waitForFunction(() => /completed/.test(document.getElementById('job-rows').textContent), null, { timeout: 15000 });
  check((await page.textContent('#job-rows')).includes('a job from the browser'), 'the job completed with its result');
  await accessible(page, 'jobs');
  await page.screenshot({ path: `${shots}/dashboard-jobs.png` });
  // Its job.completed delivery failed twice; redelivered from the page.
  await page.click('#nav [data-view=webhooks]');
  await page.waitForSelector('#webhook-rows button:has-text("Deliveries")');
  let failed = false;
  for (let i = 0; i < 100 && !failed; i += 1) {
    await page.click('#webhook-rows button:has-text("Deliveries")');
    await page.waitForTimeout(100);
    failed = (await page.textContent('#delivery-rows')).includes('failed');
  }
  check(failed, `the delivery failed after its attempts: ${await page.textContent('#delivery-rows')}`);
  await page.click('#delivery-rows button:has-text("Redeliver")');
  let delivered = false;
  for (let i = 0; i < 100 && !delivered; i += 1) {
    await page.waitForTimeout(100);
    await page.click('#webhook-rows button:has-text("Deliveries")');
    delivered = (await page.textContent('#delivery-rows')).includes('delivered');
  }
  check(delivered, 'a failed delivery is redelivered from the page');
  await page.screenshot({ path: `${shots}/dashboard-webhooks.png` });

  // An approval: a claude team on the Messages API stub asks to run Bash.
  await page.click('#nav [data-view=chat]');
  await page.selectOption('#chat-team', 'guarded');
  await page.fill('#chat-form textarea',
    // (A command that changes something: Claude Code runs read-only ones
    // such as a bare `echo` without asking.)
    'MSG<tool Bash {"command":"mkdir -p made-by-agent && echo approved-output","description":"Make a folder"}>');
  await page.click('#chat-form button[type=submit]');
  await page.waitForFunction(() => document.getElementById('pending').textContent === '1', null, { timeout: 90000 });
  check(true, 'the approval appears without a reload (the menu counts it)');
  await page.click('#nav [data-view=approvals]');
  await page.waitForSelector('#approval-list li');
  const asked = await page.textContent('#approval-list');
  check(asked.includes('guarded: Bash') && asked.includes('echo approved-output'), 'with the tool and its input');
  await accessible(page, 'approvals');
  await page.screenshot({ path: `${shots}/dashboard-approvals.png` });
  // Decided in its place in the conversation.
  await page.click('#nav [data-view=chat]');
  await page.waitForSelector('#chat-approvals li');
  check((await page.textContent('#chat-approvals')).includes('guarded: Bash'), 'the approval is shown in the conversation, in its place');
  await page.fill('#chat-approvals input', 'looks fine');
  await page.click('#chat-approvals button:has-text("Allow")');
  await page.waitForFunction(() => document.getElementById('approval-list').children.length === 0);
  await page.waitForFunction(() => /completed/.test(document.getElementById('chat-status').textContent), null, { timeout: 90000 });
  const toolAnswer = await page.textContent('#chat-answer');
  check(toolAnswer.includes('approved-output'), `the tool's output arrives: ${toolAnswer}`);
  // The tool's card in its place in the answer: after the text written
  // before it, before the text written after its result; with its output
  // and how long it took.
  const card = await page.evaluate(() => {
    const a = document.getElementById('chat-answer');
    const d = a.querySelector('details.tool');
    const kids = [...a.children];
    return d && {
      name: d.querySelector('.tool-name').textContent,
      took: d.querySelector('.tool-took').textContent,
      output: d.querySelector('pre.output')?.textContent,
      textAfter: kids.slice(kids.indexOf(d) + 1).some((k) => k.classList.contains('segment') && k.textContent.includes('approved-output')),
    };
  });
  check(card?.name === 'Bash' && /^ · \d+ ms$/.test(card.took), `the tool use was shown as it happened, with its time: ${JSON.stringify(card)}`);
  check(card.output?.includes('approved-output'), `… and what the tool gave back: ${card.output}`);
  check(card.textAfter, 'the answer written after the tool follows its card');
  await page.click('#chat-answer details.tool summary');
  await page.screenshot({ path: `${shots}/dashboard-tool-card.png` });
  // The earlier turn: its tool use as a card in its place, its time and cost.
  await page.waitForFunction(() => [...document.querySelectorAll('#chat-history li.tool')].some((t) =>
    t.querySelector('.tool-name')?.textContent === 'Bash' && t.querySelector('pre.output')?.textContent.includes('approved-output')));
  const facts = await page.textContent('#chat-history .facts');
  check(/completed · \d+ ms · \d+ in \/ \d+ out tokens/.test(facts), `each turn says how it went: ${facts}`);

  // The audit log and health.
  await page.click('#nav [data-view=audit]');
  await page.waitForSelector('#audit-rows tr');
  check((await page.textContent('#audit-rows')).includes('auth.'), 'the audit log lists sign-ins');
  await page.click('#audit-verify');
  await page.waitForFunction(() => /verifies/.test(document.getElementById('audit-verdict').textContent));
  check(true, 'the audit chain verifies from the page');
  await accessible(page, 'audit');
  await page.screenshot({ path: `${shots}/dashboard-audit.png` });
  await page.click('#nav [data-view=health]');
  await page.waitForFunction(() => document.getElementById('health-body').textContent.includes('database'));
  check(true, 'health and metrics are shown');
  await page.waitForFunction(() => /turns in the last hour/.test(document.getElementById('turn-summary').textContent));
  const summary = await page.textContent('#turn-summary');
  check(/^[1-9]\d* turns in the last hour \(bars: turns per minute, busiest [1-9]\d*\), \d+ failed/.test(summary), `turns, errors and latency are charted: ${summary}`);
  await accessible(page, 'health');

  // Keyboard: the sections are buttons, reachable with Tab.
  await page.keyboard.press('Tab');
  check(await page.evaluate(() => document.activeElement && document.activeElement.tagName !== 'BODY'), 'focus moves with the keyboard');
  // A phone's screen.
  await page.setViewportSize({ width: 390, height: 844 });
  await page.click('#nav [data-view=teams]');
  await page.waitForSelector('#team-rows tr');
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  check(overflow <= 40, `fits a phone's width (overflow ${overflow}px)`);
  await accessible(page, 'teams at a phone\'s width');
  await page.screenshot({ path: `${shots}/dashboard-phone.png` });

  }

  // Sign out.
  await page.click('#signout');
  await page.waitForSelector('#signin:not([hidden])');
  check(await page.isHidden('#nav'), 'signed out');
  check(outside.length === 0, `no request leaves the origin: ${outside.join(', ')}`);
  check(problems.length === 0, `no script errors: ${problems.join('; ')}`);
} catch (e) {
  console.error(`FAILED: ${e.stack || e}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
