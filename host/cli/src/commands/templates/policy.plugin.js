// {{name}}: a policy. Allows an action whose payload `amount` is at most
// `[config] max-amount`, escalates larger ones, denies a payload without a
// valid amount.
import { parseObject, policy, summary } from '@evos/sdk';
import * as config from '@evos/sdk/config';
import * as log from '@evos/sdk/log';
import { decide } from './logic.js';

export const policyApi = policy({
  evaluate(action, _event) {
    const maxAmount = config.getNumber('max-amount');
    const decision = decide(parseObject(action.payload).amount, maxAmount);
    log.debug(`${action.kind}: ${summary(decision)}`);
    return decision;
  },
});
