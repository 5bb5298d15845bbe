"""{{name}}: the rule, apart from the host. Allows an amount up to
`max_amount`, escalates a larger one, denies a missing or invalid one."""

from __future__ import annotations

import math
from typing import Any, Tuple


def decide(amount: Any, max_amount: float) -> Tuple[str, str]:
    """`("allow", "")`, `("escalate", reason)` or `("deny", reason)`."""
    valid = isinstance(amount, (int, float)) and not isinstance(amount, bool)
    if not valid or not math.isfinite(amount) or amount < 0:
        return ("deny", "the payload has no valid amount")
    if amount <= max_amount:
        return ("allow", "")
    return ("escalate", f"amount {amount} is above max-amount {max_amount}")
