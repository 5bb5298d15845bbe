"""payout-limit's rule, apart from the host: the same decisions as the Rust
build (plugins/payout-limit) and the JavaScript one (plugins/js/payout-limit).
Allow payouts below `allow_below`, escalate up to `deny_above` for a human,
deny anything larger; a payout that is not a finite, non-negative number
denies."""

from __future__ import annotations

import math
from typing import Any, Optional, Tuple


def limits(allow_below: Optional[str], deny_above: Optional[str]) -> Tuple[float, float]:
    """The limits from their config texts; ValueError naming the key when
    one is missing or malformed."""

    def parse(key: str, text: Optional[str]) -> float:
        if text is None:
            raise ValueError(f'config key "{key}" is not set; add it under [config] in the manifest')
        try:
            return float(text)
        except ValueError:
            raise ValueError(f'config key "{key}" = "{text}": not a number') from None

    low, high = parse("allow-below", allow_below), parse("deny-above", deny_above)
    if low > high:
        raise ValueError(f"config allow-below ({low:g}) must not exceed deny-above ({high:g})")
    return low, high


def decide(kind: str, amount: Any, allow_below: float, deny_above: float) -> Tuple[str, str]:
    """`("allow", "")`, `("escalate", reason)` or `("deny", reason)`."""
    if isinstance(amount, bool) or not isinstance(amount, (int, float)):
        return ("deny", f"{kind} payload has no numeric amount")
    if not math.isfinite(amount) or amount < 0:
        shown = str(int(amount)) if float(amount).is_integer() else repr(float(amount))
        return ("deny", f"amount {shown} is not a valid payout")
    if amount < allow_below:
        return ("allow", "")
    if amount <= deny_above:
        return (
            "escalate",
            f"amount {amount:.2f} is between {allow_below:.2f} and {deny_above:.2f}: needs a human",
        )
    return ("deny", f"amount {amount:.2f} exceeds the payout limit {deny_above:.2f}")
