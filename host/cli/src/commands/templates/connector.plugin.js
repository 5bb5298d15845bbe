// {{name}}: a connector. Turns a JSON object with an "id", or an array of
// them, into `{{name}}.received` events; records the actions it carries out.
import { InvalidInput, connector, event, parse } from '@evos/sdk';
import * as log from '@evos/sdk/log';
import { records } from './logic.js';

const SOURCE = '{{name}}';

export const connectorApi = connector({
  ingest(raw, _contentType) {
    let found;
    try {
      found = records(parse(raw));
    } catch (e) {
      throw e instanceof InvalidInput ? e : new InvalidInput(e.message);
    }
    return found.map(([id, item]) => event(id, `${SOURCE}.received`, SOURCE, item));
  },
  execute(action) {
    log.info(`executing ${action.kind} for ${action.eventId}`);
    return `${action.kind} for ${action.eventId} recorded`;
  },
});
