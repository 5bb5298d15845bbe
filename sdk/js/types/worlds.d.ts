// The host interfaces as componentize-js imports them, for plugins that
// call them directly instead of through `@evos/sdk/log`, `/config`, `/kv`
// and `/models`.
declare module 'evos:plugin/log@0.1.0' {
  export type Level = 'trace' | 'debug' | 'info' | 'warn' | 'error';
  export function write(level: Level, message: string): void;
}
declare module 'evos:plugin/config@0.1.0' {
  export function get(key: string): string | null;
}
declare module 'evos:plugin/kv@0.1.0' {
  /** Throws `{ payload: { tag: 'quota-exceeded' | 'invalid-key' | 'internal', val: string } }`. */
  export function get(key: string): Uint8Array | null;
  export function set(key: string, value: Uint8Array): void;
  function _delete(key: string): boolean;
  export { _delete as delete };
  export function listKeys(prefix: string): string[];
}
declare module 'evos:plugin/models@0.1.0' {
  import type { ModelRequest, ModelResponse } from '@evos/sdk';
  /** Throws `{ payload: { tag, val } }`, the contract's `error`. */
  export function infer(model: string, request: ModelRequest): ModelResponse;
}
