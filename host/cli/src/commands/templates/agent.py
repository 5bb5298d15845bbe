"""{{name}}: proposes `approve` for an event whose payload `amount` is below
`[config] threshold`, `review` otherwise."""

from __future__ import annotations

import math
from typing import List

import evos_sdk
from evos_sdk import Action, Event, InvalidInput, config, log
from logic import action_kind


class AgentApi(evos_sdk.Agent):
    def handle(self, event: Event) -> List[Action]:
        threshold = config.get_float("threshold")
        payload = evos_sdk.json.parse_object(event.payload)
        amount = payload.get("amount")
        if not isinstance(amount, (int, float)) or isinstance(amount, bool) or not math.isfinite(amount):
            raise InvalidInput("amount must be a finite number")
        kind = action_kind(amount, threshold)
        log.info(f"event {event.id}: {kind}")
        rationale = f"amount {amount} against threshold {threshold}"
        return [evos_sdk.action(kind, event, {"amount": amount}, rationale)]
