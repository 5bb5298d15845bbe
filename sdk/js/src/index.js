// evos-sdk for JavaScript: the contract's types as plain objects, decision
// and payload helpers, the plugin errors, and the wrappers that make an
// export answer errors instead of trapping. Pure JavaScript: it imports no
// host interface, so plugin logic built on it runs under `node --test` too.
// Host interfaces: `@evos/sdk/log`, `/config`, `/kv` (agents, connectors),
// `/models` (agents).

/** The action may be carried out. */
export const allow = () => ({ tag: 'allow' });
/** The action must not be carried out; `reason` is recorded. */
export const deny = (reason) => ({ tag: 'deny', val: String(reason) });
/** A human decides; the action waits in the review queue. */
export const escalate = (reason) => ({ tag: 'escalate', val: String(reason) });

/** A decision from a verdict (`allow`, `deny` or `escalate`) and its reason. */
export function decision(verdict, reason = '') {
  switch (verdict) {
    case 'allow': return allow();
    case 'deny': return deny(reason);
    case 'escalate': return escalate(reason);
    default: throw new Error(`unknown verdict ${JSON.stringify(verdict)}: use allow, deny or escalate`);
  }
}

/** One line for logs: `allow`, `deny: <reason>` or `escalate: <reason>`. */
export function summary(decision) {
  return decision.tag === 'allow' ? 'allow' : `${decision.tag}: ${decision.val}`;
}

/**
 * An error a plugin answers with: the contract's `error` case `tag`
 * (`invalid-input`, `denied`, `not-found`, `upstream`, `internal`).
 * componentize-js answers an export's `result` error with `payload`.
 */
export class PluginError extends Error {
  constructor(tag, message) {
    super(message);
    this.name = new.target.name;
    this.tag = tag;
    this.payload = { tag, val: String(message) };
  }
}
export class InvalidInput extends PluginError {
  constructor(message) { super('invalid-input', message); }
}
export class Denied extends PluginError {
  constructor(message) { super('denied', message); }
}
export class NotFound extends PluginError {
  constructor(message) { super('not-found', message); }
}
export class Upstream extends PluginError {
  constructor(message) { super('upstream', message); }
}
export class Internal extends PluginError {
  constructor(message) { super('internal', message); }
}

const ERRORS = {
  'invalid-input': InvalidInput,
  denied: Denied,
  'not-found': NotFound,
  upstream: Upstream,
  internal: Internal,
};

/** The PluginError for an `error` value the host returned. */
export function fromWit(error) {
  const value = error && typeof error === 'object' && 'payload' in error ? error.payload : error;
  const Kind = (value && ERRORS[value.tag]) || Internal;
  return new Kind(value && 'val' in value ? value.val : String(error));
}

/** Parse JSON text; malformed text throws InvalidInput saying why. */
export function parse(text, what = 'payload') {
  try {
    return JSON.parse(typeof text === 'string' ? text : new TextDecoder('utf-8', { fatal: true }).decode(text));
  } catch (e) {
    throw new InvalidInput(`${what}: ${e.message}`);
  }
}

/** Parse JSON text that must be an object. */
export function parseObject(text, what = 'payload') {
  const value = parse(text, what);
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new InvalidInput(`${what}: expected a JSON object`);
  }
  return value;
}

/** Serialize `value` as compact JSON; what JSON cannot hold throws Internal. */
export function dumps(value) {
  let text;
  try {
    text = JSON.stringify(value);
  } catch (e) {
    throw new Internal(`serialize: ${e.message}`);
  }
  if (text === undefined) throw new Internal(`serialize: ${typeof value} is not JSON`);
  return text;
}

/** An event with `payload` serialized as its JSON body. */
export function event(id, kind, source, payload) {
  return { id, kind, source, payload: dumps(payload), traceId: '' };
}

/** An action answering `event`, with `payload` serialized as JSON. */
export function action(kind, event, payload, rationale) {
  return { kind, eventId: event.id, payload: dumps(payload), rationale };
}

/** A model adapter's answer. */
export function response(output, model, inputUnits = 0, outputUnits = 0) {
  return {
    output: dumps(output),
    model,
    usage: { inputUnits: BigInt(inputUnits), outputUnits: BigInt(outputUnits) },
  };
}

function describe(e) {
  return e instanceof Error ? `${e.name}: ${e.message}` : String(e);
}

function answeringErrors(name, fn) {
  return function (...args) {
    try {
      return fn.apply(this, args);
    } catch (e) {
      if (e instanceof PluginError) throw e;
      console.error(e instanceof Error && e.stack ? e.stack : String(e));
      throw new Internal(`${name} threw ${describe(e)}`);
    }
  };
}

const DECISIONS = new Set(['allow', 'deny', 'escalate']);

/**
 * The export of a policy: `export const policyApi = policy({ evaluate(action, event) { ... } })`.
 * An exception, or an answer that is not a decision, denies: a broken
 * policy fails closed (the stack goes to the log).
 */
export function policy(impl) {
  return {
    evaluate(action, event) {
      let decision;
      try {
        decision = impl.evaluate(action, event);
      } catch (e) {
        console.error(e instanceof Error && e.stack ? e.stack : String(e));
        return deny(`policy failed: ${describe(e)}`);
      }
      if (!decision || !DECISIONS.has(decision.tag)) {
        return deny('policy failed: evaluate returned no decision; return allow(), deny(...) or escalate(...)');
      }
      return decision;
    },
  };
}

/** The export of an agent: `export const agentApi = agent({ handle(event) { ... } })`. */
export function agent(impl) {
  return { handle: answeringErrors('handle', impl.handle.bind(impl)) };
}

/** The export of a connector: `export const connectorApi = connector({ ingest(raw, contentType) {...}, execute(action) {...} })`. */
export function connector(impl) {
  return {
    ingest: answeringErrors('ingest', impl.ingest.bind(impl)),
    execute: answeringErrors('execute', impl.execute.bind(impl)),
  };
}

/** The export of a model adapter: `export const modelAdapterApi = modelAdapter({ infer(request) { ... } })`. */
export function modelAdapter(impl) {
  return { infer: answeringErrors('infer', impl.infer.bind(impl)) };
}
