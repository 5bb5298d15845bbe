"""The `fraud-lr` logistic-regression model, in Python: the same features,
weights file and answers as the Rust `fraud-model` crate (see its docs for
the features). Pure: it imports nothing of the host, so its tests run
under plain CPython.

Input: `{"amount": 1250.0, "prior_claims": 2, "incident": "...",
"region": "...", "policy_number": "..."}`; output: `{"score": 0..1,
"label": "low"|"medium"|"high", "features": {...}}`.
"""

from __future__ import annotations

import json
import math
from typing import Any, Dict, List, Mapping, Tuple

FEATURES = (
    "bias",
    "log_amount",
    "prior_claims",
    "round_amount",
    "risk_keywords",
    "short_incident",
    "near_threshold",
)
RISK_KEYWORDS = ("cash", "urgent", "stolen", "total loss", "no witnesses", "fire", "lost receipt")
KEYWORD_CAP = 5
PRIOR_CLAIMS_CAP = 10
SHORT_INCIDENT_CHARS = 40
MEDIUM_FROM = 0.3
HIGH_FROM = 0.7


class InvalidClaim(ValueError):
    """The input is not a claim; the message names the field."""


class Weights:
    """A weights file written by `fraud-score/train/train.py`."""

    def __init__(self, text: str) -> None:
        data = json.loads(text)
        features = data.get("features")
        weights = data.get("weights")
        if list(features or []) != list(FEATURES) or not isinstance(weights, list) or len(weights) != len(FEATURES):
            raise ValueError(f"weights are for features {features}, this model computes {list(FEATURES)}")
        if not all(isinstance(w, (int, float)) and math.isfinite(w) for w in weights):
            raise ValueError("the weights contain a non-finite value")
        self.weights: List[float] = [float(w) for w in weights]
        self.model = f"{data.get('model', 'fraud-lr')}@{data.get('version', '0.0.0')}"

    def score(self, x: List[float]) -> float:
        z = math.fsum(w * v for w, v in zip(self.weights, x))
        return sigmoid(z)


def sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def label(score: float) -> str:
    if score >= HIGH_FROM:
        return "high"
    if score >= MEDIUM_FROM:
        return "medium"
    return "low"


def _shown(value: Any) -> str:
    text = json.dumps(value, separators=(",", ":"))
    return text if len(text) <= 60 else text[:60] + "..."


def _invalid(field: str, requirement: str, got: Any) -> InvalidClaim:
    return InvalidClaim(f"input.{field} {requirement}, got {_shown(got)}")


def claim(fields: Any) -> Tuple[float, int, str]:
    """Validate an input, naming the offending field."""
    if not isinstance(fields, dict):
        raise _invalid("input", "must be a JSON object", fields)
    if "amount" not in fields:
        raise InvalidClaim("input.amount is missing")
    amount = fields["amount"]
    if isinstance(amount, bool) or not isinstance(amount, (int, float)) or not math.isfinite(amount) or amount <= 0:
        raise _invalid("amount", "must be a positive number", amount)
    if "prior_claims" not in fields:
        raise InvalidClaim("input.prior_claims is missing")
    prior = fields["prior_claims"]
    if isinstance(prior, bool) or not isinstance(prior, int) or prior < 0:
        raise _invalid("prior_claims", "must be a non-negative integer", prior)
    if "incident" not in fields:
        raise InvalidClaim("input.incident is missing")
    incident = fields["incident"]
    if not isinstance(incident, str):
        raise _invalid("incident", "must be a string", incident)
    for optional in ("region", "policy_number"):
        value = fields.get(optional)
        if value is not None and not isinstance(value, str):
            raise _invalid(optional, "must be a string", value)
    return float(amount), prior, incident


def normalized_words(text: str) -> str:
    """Lowercase ASCII letters and digits separated by single spaces,
    padded with a space on both ends, so ` phrase ` matches whole words."""
    out = [" "]
    pending_space = False
    for ch in text:
        if ch.isascii() and ch.isalnum():
            if pending_space and len(out) > 1:
                out.append(" ")
            pending_space = False
            out.append(ch.lower())
        else:
            pending_space = True
    out.append(" ")
    return "".join(out)


def keyword_count(text: str) -> int:
    words = normalized_words(text)
    return sum(1 for kw in RISK_KEYWORDS if f" {kw} " in words)


def features(amount: float, prior_claims: int, incident: str) -> List[float]:
    keywords = min(keyword_count(incident), KEYWORD_CAP)
    near = 900.0 <= amount < 1000.0 or 9000.0 <= amount < 10000.0
    return [
        1.0,
        math.log1p(amount) / 10.0,
        min(prior_claims, PRIOR_CLAIMS_CAP) / PRIOR_CLAIMS_CAP,
        1.0 if amount > 0 and math.fmod(amount, 500.0) == 0 else 0.0,
        keywords / KEYWORD_CAP,
        1.0 if len(incident.strip()) < SHORT_INCIDENT_CHARS else 0.0,
        1.0 if near else 0.0,
    ]


def score_claim(weights: Weights, fields: Any) -> Dict[str, Any]:
    """The model's output for one input."""
    x = features(*claim(fields))
    s = weights.score(x)
    return {"score": s, "label": label(s), "features": dict(zip(FEATURES, x))}


def reference_checks(text: str) -> List[Mapping[str, Any]]:
    """The reference inputs, features and scores the training script
    recorded in a weights file."""
    checks: List[Mapping[str, Any]] = json.loads(text)["checks"]
    return checks
