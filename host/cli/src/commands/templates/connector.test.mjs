import assert from 'node:assert/strict';
import { test } from 'node:test';
import { records } from './logic.js';

test('objects and arrays become records, and records need an id', () => {
  assert.equal(records({ id: 'a' }).length, 1);
  assert.equal(records([{ id: 'a' }, { id: 'b' }]).length, 2);
  assert.throws(() => records([{ id: 'a' }, { x: 1 }]), /record 1/);
  assert.throws(() => records(3), /expected a JSON object/);
});
