"""{{name}}: the model, apart from the host. A logistic score of the amount
whose weights ship with the component: 1 / (1 + e^-(bias + weight *
ln(1 + amount)))."""

import math

MODEL = "{{name}}@0.1.0"
BIAS = -6.0
WEIGHT = 0.75


def score(amount: float) -> float:
    return 1.0 / (1.0 + math.exp(-(BIAS + WEIGHT * math.log1p(amount))))
