import type { ModelRequest, ModelResponse } from './index.js';
export function infer(model: string, request: ModelRequest): ModelResponse;
export function inferJson(model: string, input: unknown, parameters?: unknown): ModelResponse;
export function output(response: ModelResponse): unknown;
