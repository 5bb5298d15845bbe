import assert from 'node:assert/strict';
import { test } from 'node:test';
import { decide } from './logic.js';

test('allows up to the limit, escalates above, denies no amount', () => {
  assert.equal(decide(250, 1000).tag, 'allow');
  assert.equal(decide(1000, 1000).tag, 'allow');
  assert.equal(decide(1000.5, 1000).tag, 'escalate');
  assert.equal(decide(undefined, 1000).tag, 'deny');
  assert.equal(decide('250', 1000).tag, 'deny');
  assert.equal(decide(-1, 1000).tag, 'deny');
});
