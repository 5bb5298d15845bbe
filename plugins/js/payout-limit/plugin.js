// payout-limit in JavaScript: allows payouts below `allow-below`, escalates
// up to `deny-above` for a human to decide, denies anything larger. Both
// limits come from the manifest's [config]; a missing or malformed limit
// denies (fail closed) with a reason that says which key to fix. Every
// decision is logged at debug level.
import { parse, policy, summary } from '@evos/sdk';
import * as config from '@evos/sdk/config';
import * as log from '@evos/sdk/log';
import { decide, limits } from './logic.js';

export const policyApi = policy({
  evaluate(action, _event) {
    let decision;
    try {
      const configured = limits(config.get('allow-below'), config.get('deny-above'));
      let payload;
      try {
        payload = parse(action.payload);
      } catch (e) {
        payload = undefined;
      }
      const amount = payload && typeof payload === 'object' ? payload.amount : undefined;
      decision = decide(action.kind, amount, configured);
    } catch (e) {
      decision = { tag: 'deny', val: e.message };
    }
    log.debug(`${action.kind} for event ${action.eventId}: ${summary(decision)}`);
    return decision;
  },
});
