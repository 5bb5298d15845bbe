"""{{name}}: a model adapter. Scores an input's `amount` with a logistic
model whose weights ship inside the component. Output:
`{"score": 0..1, "label": "low"|"high"}`."""

from __future__ import annotations

import math

import evos_sdk
from evos_sdk import InvalidInput, ModelRequest, ModelResponse, log
from logic import MODEL, score


class ModelAdapterApi(evos_sdk.ModelAdapter):
    def infer(self, request: ModelRequest) -> ModelResponse:
        amount = evos_sdk.json.parse_object(request.input).get("amount")
        if (
            not isinstance(amount, (int, float))
            or isinstance(amount, bool)
            or not math.isfinite(amount)
            or amount < 0
        ):
            raise InvalidInput("amount must be a number of at least 0")
        s = score(amount)
        label = "high" if s >= 0.5 else "low"
        log.debug(f"amount {amount} scored {s:.4f} ({label})")
        return evos_sdk.response({"score": s, "label": label}, MODEL, 1, 1)
