// Per-plugin key-value state (manifest: `kv = { ... }`); agents and
// connectors. A broken quota throws Denied, a bad key InvalidInput, a store
// failure Internal.
import * as raw from 'evos:plugin/kv@0.1.0';
import { Denied, Internal, InvalidInput, dumps, parse } from './index.js';

function converted(e) {
  const value = e && typeof e === 'object' && 'payload' in e ? e.payload : e;
  switch (value && value.tag) {
    case 'quota-exceeded': return new Denied(`kv quota exceeded: ${value.val}`);
    case 'invalid-key': return new InvalidInput(`invalid kv key: ${value.val}`);
    default: return new Internal(`kv failure: ${value && 'val' in value ? value.val : String(e)}`);
  }
}

function call(fn) {
  try {
    return fn();
  } catch (e) {
    throw converted(e);
  }
}

/** The bytes under `key` (a Uint8Array), or undefined. */
export function get(key) {
  const value = call(() => raw.get(key));
  return value === null ? undefined : value;
}
/** Store bytes (a Uint8Array) under `key`. */
export const set = (key, value) => call(() => raw.set(key, value));
/** Remove `key`; whether it existed. */
export const del = (key) => call(() => raw.delete(key));
/** Keys starting with `prefix`, in lexical order. */
export const listKeys = (prefix) => call(() => raw.listKeys(prefix));

/** The value under `key` parsed as JSON, or undefined. */
export function getJson(key) {
  const bytes = get(key);
  if (bytes === undefined) return undefined;
  try {
    return parse(bytes, `kv value under "${key}"`);
  } catch (e) {
    throw new Internal(e.message);
  }
}
/** Store `value` as JSON under `key`. */
export const setJson = (key, value) => set(key, new TextEncoder().encode(dumps(value)));
