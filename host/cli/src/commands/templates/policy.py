"""{{name}}: a policy. Allows an action whose payload `amount` is at most
`[config] max-amount`, escalates larger ones, denies a payload without a
valid amount."""

from __future__ import annotations

import evos_sdk
from evos_sdk import Action, Decision, Event, config, log
from logic import decide


class PolicyApi(evos_sdk.Policy):
    def evaluate(self, action: Action, event: Event) -> Decision:
        max_amount = config.get_float("max-amount")
        payload = evos_sdk.json.parse(action.payload)
        amount = payload.get("amount") if isinstance(payload, dict) else None
        result = evos_sdk.decision(*decide(amount, max_amount))
        log.debug(f"{action.kind}: {evos_sdk.summary(result)}")
        return result
