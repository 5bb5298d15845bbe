// {{name}}: the rule, apart from the host: the action kind for an amount.
export function actionKind(amount, threshold) {
  return amount < threshold ? 'approve' : 'review';
}
