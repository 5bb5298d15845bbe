import assert from 'node:assert/strict';
import { test } from 'node:test';
import { decide, limits } from './logic.js';

const claims = limits('1000', '10000');

test('allows below allow-below, escalates up to deny-above, denies above', () => {
  assert.deepEqual(decide('approve-payout', 999, claims), { tag: 'allow' });
  assert.equal(decide('approve-payout', 1000, claims).tag, 'escalate');
  assert.equal(decide('approve-payout', 10000, claims).tag, 'escalate');
  const over = decide('approve-payout', 20000, claims);
  assert.equal(over.tag, 'deny');
  assert.match(over.val, /10000\.00/);
});

test('a payload without a valid amount denies', () => {
  assert.match(decide('approve-payout', undefined, claims).val, /no numeric amount/);
  assert.match(decide('approve-payout', '250', claims).val, /no numeric amount/);
  assert.match(decide('approve-payout', -5, claims).val, /not a valid payout/);
});

test('limits come from config and fail closed naming the key', () => {
  assert.deepEqual(limits('100', '500'), { allowBelow: 100, denyAbove: 500 });
  assert.throws(() => limits(undefined, '500'), /allow-below/);
  assert.throws(() => limits('100', 'lots'), /deny-above/);
  assert.throws(() => limits('900', '500'), /must not exceed/);
});
