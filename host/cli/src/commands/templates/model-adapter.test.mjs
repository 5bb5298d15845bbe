import assert from 'node:assert/strict';
import { test } from 'node:test';
import { score } from './logic.js';

test('scores rise with the amount and stay between 0 and 1', () => {
  const [small, large] = [score(250), score(100000)];
  assert.ok(small > 0 && small < 0.5, String(small));
  assert.ok(large > 0.5 && large < 1, String(large));
  assert.ok(Math.abs(small - 0.1352) < 0.001, String(small));
});
