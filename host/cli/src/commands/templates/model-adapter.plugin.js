// {{name}}: a model adapter. Scores an input's `amount` with a logistic
// model: score = 1 / (1 + e^-(bias + weight * ln(1 + amount))). Output:
// `{"score": 0..1, "label": "low"|"high"}`.
import { InvalidInput, modelAdapter, parseObject, response } from '@evos/sdk';
import * as log from '@evos/sdk/log';
import { MODEL, score } from './logic.js';

export const modelAdapterApi = modelAdapter({
  infer(request) {
    const { amount } = parseObject(request.input);
    if (typeof amount !== 'number' || !Number.isFinite(amount) || amount < 0) {
      throw new InvalidInput('amount must be a number of at least 0');
    }
    const s = score(amount);
    const label = s >= 0.5 ? 'high' : 'low';
    log.debug(`amount ${amount} scored ${s.toFixed(4)} (${label})`);
    return response({ score: s, label }, MODEL, 1, 1);
  },
});
