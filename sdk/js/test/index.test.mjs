// The SDK's pure helpers under Node: what a plugin's exports answer when
// its code returns or throws. (The host interfaces are tested through real
// components: tests/polyglot/plugins.rs.)
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  Denied, Internal, InvalidInput, PluginError, action, agent, allow, decision, deny, dumps,
  escalate, event, fromWit, parse, parseObject, policy, response, summary,
} from '../src/index.js';

test('decisions and their summaries', () => {
  assert.deepEqual(allow(), { tag: 'allow' });
  assert.deepEqual(deny('no'), { tag: 'deny', val: 'no' });
  assert.deepEqual(decision('escalate', 'why'), escalate('why'));
  assert.throws(() => decision('maybe'), /unknown verdict/);
  assert.equal(summary(deny('too big')), 'deny: too big');
  assert.equal(summary(allow()), 'allow');
});

test('a policy that throws or answers no decision denies', () => {
  const broken = policy({ evaluate() { throw new TypeError('boom'); } });
  assert.deepEqual(broken.evaluate({}, {}), { tag: 'deny', val: 'policy failed: TypeError: boom' });
  const silent = policy({ evaluate() { return undefined; } });
  assert.equal(silent.evaluate({}, {}).tag, 'deny');
  const fine = policy({ evaluate() { return escalate('human'); } });
  assert.deepEqual(fine.evaluate({}, {}), { tag: 'escalate', val: 'human' });
});

test('an export answers plugin errors as they are and anything else as internal', () => {
  const refusing = agent({ handle() { throw new Denied('quota'); } });
  assert.throws(() => refusing.handle({}), (e) => e.payload.tag === 'denied' && e.payload.val === 'quota');
  const crashing = agent({ handle() { return undefined.x; } });
  assert.throws(() => crashing.handle({}), (e) => e instanceof Internal && /handle threw TypeError/.test(e.message));
});

test('payload helpers say what is wrong', () => {
  assert.throws(() => parse('{"a":'), (e) => e instanceof InvalidInput && e.payload.tag === 'invalid-input');
  assert.throws(() => parseObject('[1]'), /expected a JSON object/);
  assert.deepEqual(parse(new TextEncoder().encode('{"a":1}')), { a: 1 });
  assert.throws(() => dumps(undefined), Internal);
  assert.throws(() => dumps(1n), Internal);
  const e = event('E-1', 'x.y', 'src', { amount: 1 });
  assert.deepEqual(e, { id: 'E-1', kind: 'x.y', source: 'src', payload: '{"amount":1}', traceId: '' });
  assert.equal(action('approve', e, { ok: true }, 'r').eventId, 'E-1');
  assert.equal(response({ s: 1 }, 'm@1', 7, 1).usage.inputUnits, 7n);
});

test('errors from the host become plugin errors', () => {
  const err = fromWit({ payload: { tag: 'not-found', val: 'no such model' } });
  assert.ok(err instanceof PluginError && err.tag === 'not-found' && err.message === 'no such model');
  assert.ok(fromWit({ tag: 'weird', val: 'x' }) instanceof Internal);
});
