// {{name}}: the model, apart from the host. A logistic score of the amount
// whose weights ship with the component.
export const MODEL = '{{name}}@0.1.0';
const BIAS = -6.0;
const WEIGHT = 0.75;

export function score(amount) {
  return 1 / (1 + Math.exp(-(BIAS + WEIGHT * Math.log1p(amount))));
}
