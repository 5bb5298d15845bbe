// Types of the evos plugin contract (wit/types.wit) as componentize-js
// passes them, and of the helpers in `@evos/sdk`.

/** A normalized fact from the outside world. */
export interface Event {
  id: string;
  kind: string;
  source: string;
  /** The body as JSON text. */
  payload: string;
  /** W3C trace id, or empty. */
  traceId: string;
}

/** Something an agent proposes to do. */
export interface Action {
  kind: string;
  eventId: string;
  /** The body as JSON text. */
  payload: string;
  rationale: string;
}

export type Decision =
  | { tag: 'allow' }
  | { tag: 'deny'; val: string }
  | { tag: 'escalate'; val: string };

export interface ModelRequest {
  /** Input features or prompt as JSON text. */
  input: string;
  /** Adapter-specific parameters as JSON text (`{}` when none). */
  parameters: string;
}

export interface Usage {
  inputUnits: bigint;
  outputUnits: bigint;
}

export interface ModelResponse {
  /** The result as JSON text. */
  output: string;
  /** Name and version of the model that answered, e.g. `fraud-lr@1.0.0`. */
  model: string;
  usage: Usage;
}

export type ErrorTag = 'invalid-input' | 'denied' | 'not-found' | 'upstream' | 'internal';

/** The contract's `error`. */
export type WitError = { tag: ErrorTag; val: string };

export class PluginError extends Error {
  constructor(tag: ErrorTag, message: string);
  readonly tag: ErrorTag;
  readonly payload: WitError;
}
export class InvalidInput extends PluginError { constructor(message: string); }
export class Denied extends PluginError { constructor(message: string); }
export class NotFound extends PluginError { constructor(message: string); }
export class Upstream extends PluginError { constructor(message: string); }
export class Internal extends PluginError { constructor(message: string); }

export function fromWit(error: unknown): PluginError;

export function allow(): Decision;
export function deny(reason: string): Decision;
export function escalate(reason: string): Decision;
export function decision(verdict: 'allow' | 'deny' | 'escalate', reason?: string): Decision;
export function summary(decision: Decision): string;

export function parse(text: string | Uint8Array, what?: string): unknown;
export function parseObject(text: string | Uint8Array, what?: string): Record<string, unknown>;
export function dumps(value: unknown): string;

export function event(id: string, kind: string, source: string, payload: unknown): Event;
export function action(kind: string, event: Event, payload: unknown, rationale: string): Action;
export function response(output: unknown, model: string, inputUnits?: number, outputUnits?: number): ModelResponse;

/** What each kind's module exports, under the name componentize-js expects. */
export interface PolicyApi { evaluate(action: Action, event: Event): Decision; }
export interface AgentApi { handle(event: Event): Action[]; }
export interface ConnectorApi {
  ingest(raw: Uint8Array, contentType: string): Event[];
  execute(action: Action): string;
}
export interface ModelAdapterApi { infer(request: ModelRequest): ModelResponse; }

/** `export const policyApi = policy({...})` */
export function policy(impl: PolicyApi): PolicyApi;
/** `export const agentApi = agent({...})` */
export function agent(impl: AgentApi): AgentApi;
/** `export const connectorApi = connector({...})` */
export function connector(impl: ConnectorApi): ConnectorApi;
/** `export const modelAdapterApi = modelAdapter({...})` */
export function modelAdapter(impl: ModelAdapterApi): ModelAdapterApi;
