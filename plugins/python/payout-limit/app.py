"""payout-limit in Python: allows payouts below `allow-below`, escalates up
to `deny-above` for a human to decide, denies anything larger. Both limits
come from the manifest's [config]; a missing or malformed limit denies
(fail closed) naming the key to fix. Every decision is logged at debug
level."""

from __future__ import annotations

import evos_sdk
from evos_sdk import Action, Decision, Event, InvalidInput, config, log
from logic import decide, limits


class PolicyApi(evos_sdk.Policy):
    def evaluate(self, action: Action, event: Event) -> Decision:
        try:
            low, high = limits(config.get("allow-below"), config.get("deny-above"))
        except ValueError as e:
            return evos_sdk.deny(str(e))
        try:
            payload = evos_sdk.json.parse(action.payload)
        except InvalidInput:
            payload = None
        amount = payload.get("amount") if isinstance(payload, dict) else None
        decision = evos_sdk.decision(*decide(action.kind, amount, low, high))
        log.debug(f"{action.kind} for event {action.event_id}: {evos_sdk.summary(decision)}")
        return decision
