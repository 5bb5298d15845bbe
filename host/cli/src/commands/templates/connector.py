"""{{name}}: a connector. Turns a JSON object with an "id", or an array of
them, into `{{name}}.received` events; records the actions it carries out."""

from __future__ import annotations

from typing import List

import evos_sdk
from evos_sdk import Action, Event, InvalidInput, log
from logic import records

SOURCE = "{{name}}"


class ConnectorApi(evos_sdk.Connector):
    def ingest(self, raw: bytes, content_type: str) -> List[Event]:
        try:
            found = records(evos_sdk.json.parse(raw))
        except ValueError as e:
            raise InvalidInput(str(e)) from None
        return [evos_sdk.event(i, f"{SOURCE}.received", SOURCE, item) for i, item in found]

    def execute(self, action: Action) -> str:
        log.info(f"executing {action.kind} for {action.event_id}")
        return f"{action.kind} for {action.event_id} recorded"
