// payout-limit's rule, apart from the host: the same decisions as the Rust
// build (plugins/payout-limit). Allow payouts below `allowBelow`, escalate
// up to `denyAbove` for a human, deny anything larger; a payout that is
// not a finite, non-negative number denies.

const money = (n) => n.toFixed(2);

/** The limits from their config texts; an Error naming the key when one is missing or malformed. */
export function limits(allowBelowText, denyAboveText) {
  const parse = (key, text) => {
    if (text === undefined) throw new Error(`config key "${key}" is not set; add it under [config] in the manifest`);
    const n = Number(text);
    if (text.trim() === '' || Number.isNaN(n)) throw new Error(`config key "${key}" = "${text}": not a number`);
    return n;
  };
  const allowBelow = parse('allow-below', allowBelowText);
  const denyAbove = parse('deny-above', denyAboveText);
  if (allowBelow > denyAbove) {
    throw new Error(`config allow-below (${allowBelow}) must not exceed deny-above (${denyAbove})`);
  }
  return { allowBelow, denyAbove };
}

/** The decision for a payout amount (anything the payload held). */
export function decide(kind, amount, { allowBelow, denyAbove }) {
  if (typeof amount !== 'number') {
    return { tag: 'deny', val: `${kind} payload has no numeric amount` };
  }
  if (!Number.isFinite(amount) || amount < 0) {
    return { tag: 'deny', val: `amount ${amount} is not a valid payout` };
  }
  if (amount < allowBelow) return { tag: 'allow' };
  if (amount <= denyAbove) {
    return {
      tag: 'escalate',
      val: `amount ${money(amount)} is between ${money(allowBelow)} and ${money(denyAbove)}: needs a human`,
    };
  }
  return { tag: 'deny', val: `amount ${money(amount)} exceeds the payout limit ${money(denyAbove)}` };
}
