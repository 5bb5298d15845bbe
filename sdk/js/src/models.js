// Run named model adapters through the host (manifest: `models = [...]`);
// agents only. An adapter's error throws the matching PluginError.
import { infer as rawInfer } from 'evos:plugin/models@0.1.0';
import { dumps, fromWit, parse } from './index.js';

/** Run `model` on a request `{ input, parameters }` (JSON texts). */
export function infer(model, request) {
  try {
    return rawInfer(model, request);
  } catch (e) {
    throw fromWit(e);
  }
}

/** Run `model` with `input` (and `parameters`) serialized as JSON. */
export const inferJson = (model, input, parameters = {}) =>
  infer(model, { input: dumps(input), parameters: dumps(parameters) });

/** A response's output, parsed. */
export const output = (response) => parse(response.output, 'model output');
