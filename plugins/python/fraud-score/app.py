"""`fraud-score` in Python: the `fraud-lr@1.0.0` model adapter, scoring an
insurance claim's fraud risk with the logistic-regression weights in
`weights.json` (fitted by `plugins/fraud-score/train/train.py`), the same
model and weights as the Rust build.

The weights are read when the component is built: componentize-py
snapshots the initialized interpreter, so every call starts with them
parsed and checked, and a broken weights file fails the build, not a call.
"""

from __future__ import annotations

import os

import evos_sdk
from evos_sdk import InvalidInput, ModelRequest, ModelResponse, log
from model import FEATURES, InvalidClaim, Weights, score_claim

with open(os.path.join(os.path.dirname(__file__), "weights.json"), encoding="utf-8") as f:
    WEIGHTS = Weights(f.read())


class ModelAdapterApi(evos_sdk.ModelAdapter):
    def infer(self, request: ModelRequest) -> ModelResponse:
        fields = evos_sdk.json.parse(request.input, "input")
        try:
            output = score_claim(WEIGHTS, fields)
        except InvalidClaim as e:
            raise InvalidInput(str(e)) from None
        log.debug(f"{WEIGHTS.model}: score {output['score']:.4f} ({output['label']})")
        return evos_sdk.response(output, WEIGHTS.model, len(FEATURES), 1)
