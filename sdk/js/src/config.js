// Configuration values granted by the manifest's `[config]` table.
import { get as rawGet } from 'evos:plugin/config@0.1.0';
import { InvalidInput } from './index.js';

/** The value of `key`, or undefined when the manifest does not set it. */
export function get(key) {
  const value = rawGet(key);
  return value === null ? undefined : value;
}

/** The value of `key`; a missing key throws InvalidInput naming it. */
export function require(key) {
  const value = get(key);
  if (value === undefined) {
    throw new InvalidInput(`config key "${key}" is not set; add it under [config] in the manifest`);
  }
  return value;
}

/** The value of `key` as a finite number. */
export function getNumber(key) {
  const raw = require(key);
  const value = Number(raw);
  if (raw.trim() === '' || !Number.isFinite(value)) {
    throw new InvalidInput(`config key "${key}" = "${raw}": not a finite number`);
  }
  return value;
}

/** The value of `key` as `true` or `false`. */
export function getBool(key) {
  const raw = require(key);
  if (raw === 'true' || raw === 'false') return raw === 'true';
  throw new InvalidInput(`config key "${key}" = "${raw}": expected true or false`);
}
