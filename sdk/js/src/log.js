// Logging into the host's log (manifest: `log = true`). console.log and
// console.error work too: stdout and stderr reach the call's log.
import { write } from 'evos:plugin/log@0.1.0';

export const trace = (message) => write('trace', String(message));
export const debug = (message) => write('debug', String(message));
export const info = (message) => write('info', String(message));
export const warn = (message) => write('warn', String(message));
export const error = (message) => write('error', String(message));
