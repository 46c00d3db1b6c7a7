// Drive steadfast with the official @anthropic-ai/sdk and openai npm SDKs.
//
// Run by tests/clients/run.sh (NODE_PATH points at the scratch install)
// against the mocks and proxies that up.sh started (SF_*, MOCK_*, SF_LOGS
// in the environment). Each check sets the mocks' behaviour, makes one SDK
// call with the SDK's default retry policy through a fetch that counts the
// SDK's HTTP requests and keeps the last response's headers, and looks at
// what the SDK returned or threw and at steadfast's access log line.
// Prints one line per check; exits 1 when any check failed.

import { createRequire } from 'node:module';
import fs from 'node:fs';
import path from 'node:path';

const require = createRequire(path.join(process.env.NODE_PATH || '.', 'x.js'));
const Anthropic = require('@anthropic-ai/sdk').default ?? require('@anthropic-ai/sdk');
const OpenAIModule = require('openai');
const OpenAI = OpenAIModule.default ?? OpenAIModule;

const E = process.env;
const MOCKS = ['A1', 'A2', 'O1', 'O2', 'TA', 'TO'];
const results = [];
const checks = [];

class Fail extends Error {}
const expect = (cond, msg) => {
  if (!cond) throw new Fail(msg);
};

async function post(url, body) {
  const r = await fetch(url, { method: 'POST', body: JSON.stringify(body), headers: { 'content-type': 'application/json' } });
  return r.json();
}

async function setup(behaviors = {}) {
  for (const m of MOCKS) {
    await post(`${E['MOCK_' + m]}/_mock/behavior`, {});
    await post(`${E['MOCK_' + m]}/_mock/reset`, {});
  }
  for (const [m, b] of Object.entries(behaviors)) await post(`${E['MOCK_' + m.toUpperCase()]}/_mock/behavior`, b);
}

async function hits(m) {
  const r = await fetch(`${E['MOCK_' + m.toUpperCase()]}/_mock/stats`);
  return (await r.json()).requests;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** The access lines a proxy writes after this point. */
class Log {
  constructor(proxy) {
    this.path = path.join(E.SF_LOGS, `${proxy}.log`);
    this.start = fs.statSync(this.path).size;
  }
  async requests(requestId) {
    const deadline = Date.now() + 5000;
    for (;;) {
      const fd = fs.openSync(this.path, 'r');
      const size = fs.fstatSync(fd).size;
      const buf = Buffer.alloc(size - this.start);
      fs.readSync(fd, buf, 0, buf.length, this.start);
      fs.closeSync(fd);
      const out = buf
        .toString()
        .split('\n')
        .map((l) => {
          try {
            return JSON.parse(l);
          } catch {
            return null;
          }
        })
        .filter((v) => v && v.event === 'request');
      const found = requestId ? out.some((v) => v.request_id === requestId) : out.length > 0;
      if (found) return out;
      if (Date.now() > deadline) throw new Fail(`no access line for ${requestId}; saw ${JSON.stringify(out)}`);
      await sleep(50);
    }
  }
  async one(requestId) {
    const lines = await this.requests(requestId);
    expect(lines.length === 1, `expected one access line, got ${lines.length}: ${JSON.stringify(lines)}`);
    return lines[0];
  }
}

/** A fetch that counts the SDK's requests and keeps the last headers. */
function spy() {
  const s = { calls: 0, headers: null };
  s.fetch = async (url, init) => {
    s.calls += 1;
    const r = await fetch(url, init);
    s.headers = r.headers;
    return r;
  };
  return s;
}

function check(client, feature, f) {
  checks.push([`${client} ${feature}`, async () => {
    try {
      const note = (await f()) || 'ok';
      results.push([client, feature, 'PASS', note]);
    } catch (e) {
      results.push([client, feature, 'FAIL', e instanceof Fail ? e.message : `${e.constructor.name}: ${e.message}`]);
      if (!(e instanceof Fail)) console.error(e);
    }
  }]);
}

const MSG = [{ role: 'user', content: 'hi' }];
const ac = (s, base = E.SF_MAIN, opts = {}) => new Anthropic({ apiKey: 'sk-client-dummy', baseURL: base, fetch: s.fetch, ...opts });
const oc = (s, base = E.SF_MAIN, opts = {}) => new OpenAI({ apiKey: 'sk-client-dummy', baseURL: `${base}/v1`, fetch: s.fetch, ...opts });
const text = (m) => m.content.filter((b) => b.type === 'text').map((b) => b.text).join('');

const CALLS = {
  anthropic: {
    mk: ac,
    p: ['a1', 'a2'],
    create: async (c) => text(await c.messages.create({ model: 'm', max_tokens: 64, messages: MSG })),
    stream: async (c) => {
      const m = await c.messages.stream({ model: 'm', max_tokens: 64, messages: MSG }).finalMessage();
      expect(m.stop_reason === 'end_turn', `stop_reason ${m.stop_reason}`);
      return text(m);
    },
  },
  'openai-chat': {
    mk: oc,
    p: ['o1', 'o2'],
    create: async (c) => (await c.chat.completions.create({ model: 'm', messages: MSG })).choices[0].message.content,
    stream: async (c) => {
      const m = await c.chat.completions.stream({ model: 'm', messages: MSG }).finalChatCompletion();
      expect(m.choices[0].finish_reason === 'stop', `finish_reason ${m.choices[0].finish_reason}`);
      return m.choices[0].message.content;
    },
  },
  'openai-responses': {
    mk: oc,
    p: ['o1', 'o2'],
    create: async (c) => (await c.responses.create({ model: 'm', input: 'hi' })).output_text,
    stream: async (c) => {
      const r = await c.responses.stream({ model: 'm', input: 'hi' }).finalResponse();
      expect(r.status === 'completed', `status ${r.status}`);
      return r.output_text;
    },
  },
};

/** Call; the answer must come from `provider` after `attempts` attempts, in
 * one SDK request (no SDK retry) and one access line. */
async function served(d, how, want, provider, attempts, proxy = 'main', base = E.SF_MAIN) {
  const s = spy();
  const log = new Log(proxy);
  const got = await CALLS[d][how](CALLS[d].mk(s, base));
  expect(got === want, `text ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
  expect(s.calls === 1, `the SDK sent ${s.calls} requests`);
  expect(s.headers.get('x-steadfast-provider') === provider, `provider ${s.headers.get('x-steadfast-provider')}`);
  expect(s.headers.get('x-steadfast-attempts') === String(attempts), `x-steadfast-attempts ${s.headers.get('x-steadfast-attempts')}`);
  const line = await log.one(s.headers.get('x-request-id'));
  expect(line.class === 'success', `logged class ${line.class}`);
  expect(line.attempts === attempts, `logged attempts ${line.attempts}`);
  return line;
}

/** Call a stream that must end in an error the SDK raises. */
async function raises(d, base = E.SF_MAIN, proxy = 'main') {
  const s = spy();
  const log = new Log(proxy);
  let got;
  try {
    got = await CALLS[d].stream(CALLS[d].mk(s, base));
  } catch (e) {
    if (e instanceof Fail) throw e;
    const line = await log.one();
    expect(line.class !== 'success', `logged ${line.class}`);
    expect(s.calls === 1, `the SDK sent ${s.calls} requests`);
    return [e, line];
  }
  throw new Fail(`no error: the SDK returned ${JSON.stringify(got)} as a complete answer`);
}

for (const d of Object.keys(CALLS)) {
  const [p1, p2] = CALLS[d].p;
  const cl = `node-${d}`;
  for (const how of ['create', 'stream']) {
    check(cl, `plain ${how}`, async () => {
      await setup();
      await served(d, how, `Hello from ${p1}`, p1, 1);
    });
    for (const status of [529, 503, 429]) {
      check(cl, `failover ${status} ${how}`, async () => {
        await setup({ [p1]: { status } });
        const line = await served(d, how, `Hello from ${p2}`, p2, 2);
        expect((await hits(p1)) === 1, `${p1} saw ${await hits(p1)} requests`);
        return `attempt_chain ${JSON.stringify(line.attempt_chain.map((a) => a.result))}`;
      });
    }
    check(cl, `empty 200 -> failover ${how}`, async () => {
      await setup({ [p1]: { empty: true } });
      await served(d, how, `Hello from ${p2}`, p2, 2);
    });
  }
  check(cl, 'error event before content -> failover', async () => {
    await setup({ [p1]: { error_event_after: 0 } });
    await served(d, 'stream', `Hello from ${p2}`, p2, 2);
  });
  check(cl, 'pings past first_content_ms -> failover', async () => {
    await setup({ [p1]: { pings_before_content_ms: 3000 } });
    await served(d, 'stream', `Hello from ${p2}`, p2, 2);
  });
  check(cl, 'error event after content -> SDK error', async () => {
    await setup({ [p1]: { events: 5, error_event_after: 2 } });
    const [e, line] = await raises(d);
    return `threw ${e.constructor.name}: ${String(e.message).slice(0, 70)}; logged ${line.class}`;
  });
  check(cl, 'cut mid-stream, no resume -> SDK error', async () => {
    await setup({ [p1]: { events: 5, cut_mid_stream_after: 2 } });
    const [e, line] = await raises(d);
    expect(line.class === 'network', `logged ${line.class}`);
    return `threw ${e.constructor.name}: ${String(e.message).slice(0, 70)}`;
  });
}

for (const d of ['anthropic', 'openai-chat']) {
  const [p1, p2] = CALLS[d].p;
  check(`node-${d}`, 'cut mid-stream, resume_streams -> one message', async () => {
    await setup({ [p1]: { events: 5, cut_mid_stream_after: 2 } });
    const s = spy();
    const log = new Log('resume');
    const got = await CALLS[d].stream(CALLS[d].mk(s, E.SF_RESUME));
    expect(got === `Hello from ${p2}`, `text ${JSON.stringify(got)}`);
    expect(s.calls === 1, `the SDK sent ${s.calls} requests`);
    const line = await log.one(s.headers.get('x-request-id'));
    expect(line.resumed_from === p1 && line.provider === p2, `resumed_from ${line.resumed_from} provider ${line.provider}`);
  });
}

// Cross-dialect.
for (const how of ['create', 'stream']) {
  check('node-anthropic', `translated to openai chat, ${how}`, async () => {
    await setup();
    const line = await served('anthropic', how, 'Hello from to', 'to', 1, 'translate', E.SF_TRANSLATE);
    return `translated ${line.attempt_chain[0].translated}`;
  });
  check('node-openai-chat', `translated to anthropic, ${how}`, async () => {
    await setup();
    const line = await served('openai-chat', how, 'Hello from ta', 'ta', 1, 'translate', E.SF_TRANSLATE);
    return `translated ${line.attempt_chain[0].translated}`;
  });
}
check('node-anthropic', 'translated, tools + tool turns + system message, stream', async () => {
  await setup();
  const s = spy();
  const m = await ac(s, E.SF_TRANSLATE)
    .messages.stream({
      model: 'm',
      max_tokens: 64,
      system: 'be brief',
      tools: [{ name: 'get_weather', description: 'Weather', input_schema: { type: 'object', properties: { city: { type: 'string' } } } }],
      messages: [
        { role: 'user', content: 'Weather in Paris?' },
        { role: 'assistant', content: [{ type: 'tool_use', id: 'toolu_1', name: 'get_weather', input: { city: 'Paris' } }] },
        { role: 'user', content: [{ type: 'tool_result', tool_use_id: 'toolu_1', content: 'sunny' }] },
      ],
    })
    .finalMessage();
  expect(text(m) === 'Hello from to', `content ${JSON.stringify(m.content)}`);
  return 'accepted; the mock answers text only';
});

// Client auth.
const TOKEN = (E.CLIENT_TOKENS || '').split(',')[0];
check('node-anthropic', 'client_auth: x-api-key and Bearer accepted; wrong -> AuthenticationError, one request', async () => {
  await setup();
  const s = spy();
  expect(text(await ac(s, E.SF_AUTH, { apiKey: TOKEN }).messages.create({ model: 'm', max_tokens: 8, messages: MSG })) === 'Hello from a1', 'x-api-key');
  expect(text(await ac(s, E.SF_AUTH, { apiKey: null, authToken: TOKEN }).messages.create({ model: 'm', max_tokens: 8, messages: MSG })) === 'Hello from a1', 'Bearer');
  const w = spy();
  try {
    await ac(w, E.SF_AUTH, { apiKey: 'wrong' }).messages.create({ model: 'm', max_tokens: 8, messages: MSG });
  } catch (e) {
    expect(e instanceof Anthropic.AuthenticationError, `threw ${e.constructor.name}`);
    expect(w.calls === 1, `the SDK sent ${w.calls} requests`);
    return 'ok';
  }
  throw new Fail('wrong token accepted');
});
check('node-openai-chat', 'client_auth: Bearer accepted; wrong -> AuthenticationError, one request', async () => {
  await setup();
  const s = spy();
  const m = await oc(s, E.SF_AUTH, { apiKey: TOKEN }).chat.completions.create({ model: 'm', messages: MSG });
  expect(m.choices[0].message.content === 'Hello from o1', 'Bearer');
  const w = spy();
  try {
    await oc(w, E.SF_AUTH, { apiKey: 'wrong' }).chat.completions.create({ model: 'm', messages: MSG });
  } catch (e) {
    expect(e instanceof OpenAI.AuthenticationError, `threw ${e.constructor.name}`);
    expect(w.calls === 1, `the SDK sent ${w.calls} requests`);
    return 'ok';
  }
  throw new Fail('wrong token accepted');
});

const only = process.argv[2] || '';
for (const [name, run] of checks) if (name.includes(only)) await run();
let failed = 0;
for (const [client, feature, res, note] of results) {
  failed += res === 'FAIL';
  console.log(`${res}  ${client.padEnd(22)} ${feature.padEnd(58)} ${note}`);
}
console.log(`${results.length - failed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
