import assert from 'node:assert/strict';
import { test } from 'node:test';
import { actionKind } from './logic.js';

test('below the threshold approves, at or above reviews', () => {
  assert.equal(actionKind(250, 1000), 'approve');
  assert.equal(actionKind(1000, 1000), 'review');
  assert.equal(actionKind(5000, 1000), 'review');
});
