"""{{name}}: the rule, apart from the host: the action kind for an amount."""


def action_kind(amount: float, threshold: float) -> str:
    return "approve" if amount < threshold else "review"
