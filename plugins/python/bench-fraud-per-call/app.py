"""The Python fraud-score with its weights parsed and checked on every call
instead of once when the component is built: the baseline of the
pre-initialization benchmark (host/cli/benches/ratios/languages.rs). The
model is plugins/python/fraud-score's, on the Python path by the build
command."""

from __future__ import annotations

import os

import evos_sdk
import model
from evos_sdk import InvalidInput, ModelRequest, ModelResponse, log

with open(os.path.join(os.path.dirname(model.__file__), "weights.json"), encoding="utf-8") as f:
    WEIGHTS_TEXT = f.read()


class ModelAdapterApi(evos_sdk.ModelAdapter):
    def infer(self, request: ModelRequest) -> ModelResponse:
        weights = model.Weights(WEIGHTS_TEXT)
        fields = evos_sdk.json.parse(request.input, "input")
        try:
            output = model.score_claim(weights, fields)
        except model.InvalidClaim as e:
            raise InvalidInput(str(e)) from None
        log.debug(f"{weights.model}: score {output['score']:.4f} ({output['label']})")
        return evos_sdk.response(output, weights.model, len(model.FEATURES), 1)
