// {{name}}: the rule, apart from the host. Allows an amount up to
// `maxAmount`, escalates a larger one, denies a missing or invalid one.
export function decide(amount, maxAmount) {
  if (typeof amount !== 'number' || !Number.isFinite(amount) || amount < 0) {
    return { tag: 'deny', val: 'the payload has no valid amount' };
  }
  if (amount <= maxAmount) return { tag: 'allow' };
  return { tag: 'escalate', val: `amount ${amount} is above max-amount ${maxAmount}` };
}
