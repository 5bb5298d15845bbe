// {{name}}: an agent. Proposes `approve` for an event whose payload
// `amount` is below `[config] threshold`, `review` otherwise.
import { InvalidInput, action, agent, parseObject } from '@evos/sdk';
import * as config from '@evos/sdk/config';
import * as log from '@evos/sdk/log';
import { actionKind } from './logic.js';

export const agentApi = agent({
  handle(event) {
    const threshold = config.getNumber('threshold');
    const { amount } = parseObject(event.payload);
    if (typeof amount !== 'number' || !Number.isFinite(amount)) {
      throw new InvalidInput('amount must be a finite number');
    }
    const kind = actionKind(amount, threshold);
    log.info(`event ${event.id}: ${kind}`);
    return [action(kind, event, { amount }, `amount ${amount} against threshold ${threshold}`)];
  },
});
