#!/usr/bin/env python3
"""Train the `fraud-lr` logistic-regression model shipped inside the
fraud-score plugins and write its weights file (../weights.json unless
``--out`` says otherwise).

Pure Python 3 standard library: no numpy.

Data
----
There is no real claims data in this repository, so the model is fitted on a
synthetic, labelled data set drawn from the generative process below (fixed
seed, fully reproducible). The process encodes common insurance-fraud
indicators; the weights therefore express those indicators, nothing more.

For each claim:

* ``fraud`` ~ Bernoulli(FRAUD_RATE).
* ``amount``: log-normal; median 1 200 for genuine claims, 3 500 for
  fraudulent ones. Fraudulent claims are more often round (a multiple of 500:
  35 % vs 6 %) and more often sized just under a review threshold
  (900-999 or 9 000-9 999: 15 % vs 3 %).
* ``prior_claims`` ~ Poisson(0.5) for genuine claimants, Poisson(1.8) for
  fraudulent ones.
* ``incident``: built from neutral phrases plus risk phrases ("cash",
  "urgent", "stolen", "total loss", "no witnesses", "fire", "lost
  receipt"). The number of risk phrases is Poisson(0.35) for genuine claims
  and Poisson(1.4) for fraudulent ones. The description is a single terse
  phrase with probability 0.15 (genuine) or 0.45 (fraudulent), otherwise two
  to four phrases.

Labels are then flipped with probability LABEL_NOISE so the task is not
perfectly separable.

Features
--------
``features()`` below is the reference implementation; the Rust plugin
(src/lib.rs) implements the same function and its unit tests check it against
the ``checks`` this script writes into weights.json.

Model
-----
Logistic regression fitted by full-batch gradient descent on the mean log
loss plus an L2 penalty (not applied to the bias), run until every gradient
component is below TOLERANCE. The data is split 80/20
into train and holdout sets; accuracy (threshold 0.5) and ROC AUC are
reported for both and recorded in weights.json.

Usage
-----
    python3 train.py                  # fraud-lr@1.0.0, writes ../weights.json
    python3 train.py --seed 20250114 --n 20000 --version 1.1.0 \
        --out ../weights-1.1.0.json   # fraud-lr@1.1.0 (the retrained build)
    python3 train.py --seed 20250301 --version 1.3.0 --ignore prior_claims \
        --out ../weights-1.3.0.json   # fraud-lr@1.3.0: blind to prior claims
    evos labels export --plugin fraud-score > labels.jsonl
    python3 train.py --labels labels.jsonl --version 1.4.0 \
        --out ../weights-1.4.0.json   # retrained on what people said

``--seed`` and ``--n`` choose the synthetic sample, ``--version`` is the
version recorded in the weights file, ``--out`` where it is written. The
defaults reproduce weights.json.
"""

import argparse
import json
import math
import os
import random

SEED = 20240611
N = 10_000
VERSION = "1.0.0"
HOLDOUT_FRACTION = 0.2
FRAUD_RATE = 0.12
LABEL_NOISE = 0.02
L2 = 1e-3
LEARNING_RATE = 1.5
MAX_EPOCHS = 20_000
TOLERANCE = 1e-5  # stop when every gradient component is smaller than this

RISK_KEYWORDS = [
    "cash",
    "urgent",
    "stolen",
    "total loss",
    "no witnesses",
    "fire",
    "lost receipt",
]
KEYWORD_CAP = 5
PRIOR_CLAIMS_CAP = 10
SHORT_INCIDENT_CHARS = 40

FEATURE_NAMES = [
    "bias",
    "log_amount",
    "prior_claims",
    "round_amount",
    "risk_keywords",
    "short_incident",
    "near_threshold",
]

NEUTRAL_PHRASES = [
    "rear-ended at a traffic light on the way to work",
    "water leak from the upstairs bathroom damaged the ceiling",
    "hail dented the roof and bonnet of the car",
    "laptop screen cracked after a fall at the office",
    "slipped on ice in the driveway and sprained a wrist",
    "storm blew tiles off the garage roof",
    "side mirror clipped by a passing van while parked",
    "burst pipe flooded the kitchen floor overnight",
    "phone dropped into the sea during a boat trip",
    "tree branch fell onto the fence during high winds",
    "police report attached with the repair estimate",
    "photos of the damage and the invoice are attached",
    "neighbour witnessed the incident and gave a statement",
]

RISK_PHRASES = {
    "cash": "please pay in cash",
    "urgent": "this is urgent",
    "stolen": "everything was stolen",
    "total loss": "the vehicle is a total loss",
    "no witnesses": "there were no witnesses",
    "fire": "a fire destroyed the contents",
    "lost receipt": "I lost receipt for the items",
}

TERSE_PHRASES = ["car damaged", "items gone", "house damage", "accident", "broken", "water damage"]


# --------------------------------------------------------------------------
# Features (reference implementation, mirrored in src/lib.rs)
# --------------------------------------------------------------------------


def normalized_words(text):
    """Lowercase ASCII letters and digits; every other character separates
    words. Returns the words joined by single spaces, padded with a space on
    both sides so phrases can be matched on word boundaries."""
    out = []
    for ch in text:
        if ch.isascii() and ch.isalnum():
            out.append(ch.lower())
        else:
            out.append(" ")
    return " " + " ".join("".join(out).split()) + " "


def keyword_count(text):
    """Number of distinct risk keywords present as whole words/phrases."""
    words = normalized_words(text)
    return sum(1 for kw in RISK_KEYWORDS if " " + kw + " " in words)


def features(amount, prior_claims, incident):
    """Feature vector in FEATURE_NAMES order."""
    kw = min(keyword_count(incident), KEYWORD_CAP)
    return [
        1.0,
        math.log1p(amount) / 10.0,
        min(prior_claims, PRIOR_CLAIMS_CAP) / PRIOR_CLAIMS_CAP,
        1.0 if amount > 0 and math.fmod(amount, 500.0) == 0.0 else 0.0,
        kw / KEYWORD_CAP,
        1.0 if len(incident.strip()) < SHORT_INCIDENT_CHARS else 0.0,
        1.0 if (900.0 <= amount < 1000.0) or (9000.0 <= amount < 10000.0) else 0.0,
    ]


# --------------------------------------------------------------------------
# Synthetic data
# --------------------------------------------------------------------------


def poisson(rng, lam):
    """Knuth's Poisson sampler (fine for the small rates used here)."""
    limit = math.exp(-lam)
    k, p = 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def sample_claim(rng):
    fraud = rng.random() < FRAUD_RATE
    if fraud:
        amount = rng.lognormvariate(math.log(3500.0), 1.0)
        round_p, threshold_p, prior_rate, kw_rate, terse_p = 0.35, 0.15, 1.8, 1.4, 0.45
    else:
        amount = rng.lognormvariate(math.log(1200.0), 0.9)
        round_p, threshold_p, prior_rate, kw_rate, terse_p = 0.06, 0.03, 0.5, 0.35, 0.15

    u = rng.random()
    if u < threshold_p:
        low = 900.0 if rng.random() < 0.6 else 9000.0
        amount = round(low + rng.random() * (low / 9.0 - 1.0), 2)
    elif u < threshold_p + round_p:
        amount = float(max(1, round(amount / 500.0)) * 500)
    else:
        amount = round(max(amount, 20.0), 2)

    prior = poisson(rng, prior_rate)

    n_kw = min(poisson(rng, kw_rate), len(RISK_KEYWORDS))
    keywords = rng.sample(RISK_KEYWORDS, n_kw)
    if rng.random() < terse_p:
        phrases = [rng.choice(TERSE_PHRASES)] + [kw for kw in keywords]
    else:
        phrases = rng.sample(NEUTRAL_PHRASES, rng.randint(2, 4)) + [RISK_PHRASES[kw] for kw in keywords]
    rng.shuffle(phrases)
    incident = ", ".join(phrases)
    incident = incident[0].upper() + incident[1:] + "."

    label = 1 if fraud else 0
    if rng.random() < LABEL_NOISE:
        label = 1 - label
    return {"amount": amount, "prior_claims": prior, "incident": incident, "label": label}


# --------------------------------------------------------------------------
# Logistic regression
# --------------------------------------------------------------------------


def sigmoid(z):
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def predict(weights, x):
    return sigmoid(sum(w * v for w, v in zip(weights, x)))


def fit(xs, ys):
    """Full-batch gradient descent; returns (weights, epochs run, final
    largest gradient component)."""
    n, d = len(xs), len(xs[0])
    columns = [[x[j] for x in xs] for j in range(d)]
    w = [0.0] * d
    largest = float("inf")
    epoch = 0
    while epoch < MAX_EPOCHS and largest >= TOLERANCE:
        epoch += 1
        residuals = [predict(w, x) - y for x, y in zip(xs, ys)]
        grads = []
        for j in range(d):
            grad = sum(r * v for r, v in zip(residuals, columns[j])) / n
            if j > 0:
                grad += L2 * w[j]
            grads.append(grad)
        for j in range(d):
            w[j] -= LEARNING_RATE * grads[j]
        largest = max(abs(g) for g in grads)
    return w, epoch, largest


def log_loss(weights, xs, ys):
    eps = 1e-12
    total = 0.0
    for x, y in zip(xs, ys):
        p = min(max(predict(weights, x), eps), 1.0 - eps)
        total -= y * math.log(p) + (1 - y) * math.log(1.0 - p)
    return total / len(xs)


def accuracy(weights, xs, ys):
    return sum(1 for x, y in zip(xs, ys) if (predict(weights, x) >= 0.5) == (y == 1)) / len(xs)


def auc(weights, xs, ys):
    """ROC AUC via the Mann-Whitney U statistic, ties counted as one half."""
    scored = sorted((predict(weights, x), y) for x, y in zip(xs, ys))
    pos = sum(ys)
    neg = len(ys) - pos
    rank_sum = 0.0
    i = 0
    while i < len(scored):
        j = i
        while j < len(scored) and scored[j][0] == scored[i][0]:
            j += 1
        mean_rank = (i + 1 + j) / 2.0
        rank_sum += mean_rank * sum(1 for k in range(i, j) if scored[k][1] == 1)
        i = j
    return (rank_sum - pos * (pos + 1) / 2.0) / (pos * neg)


# --------------------------------------------------------------------------


CHECK_INPUTS = [
    (250.0, 0, "Rear-ended at a traffic light; photos of the damage are attached."),
    (5000.0, 4, "Urgent: car stolen, no witnesses. Pay cash."),
    (980.0, 1, "Fire in the garage, total loss, I lost receipt for the tools."),
    (12000.5, 12, "Wildfire smoke damage to the firehouse roof."),
]


def load_labels(path, rng):
    """Feature vectors and targets from exported labels, shuffled with
    `rng` (so the holdout split is reproducible) and the classes
    interleaved. Rows whose class is not
    `positive` or `negative` (a label the model's manifest does not map)
    are skipped."""
    xs, ys = [], []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            row = json.loads(line)
            target = {"positive": 1, "negative": 0}.get(row.get("class"))
            found = row.get("features") or {}
            if target is None or not found:
                continue
            try:
                xs.append([1.0 if name == "bias" else float(found[name]) for name in FEATURE_NAMES])
            except (KeyError, TypeError, ValueError) as e:
                raise SystemExit(f"{path}:{number}: features lack {e}; export them with `evos labels export`")
            ys.append(target)
    if len(xs) < 10 or len(set(ys)) < 2:
        raise SystemExit(
            f"{path}: {len(xs)} usable labelled rows with classes {sorted(set(ys))}: "
            "training needs at least 10, with both positive and negative examples"
        )
    order = list(range(len(xs)))
    rng.shuffle(order)
    # Interleave the classes, so the holdout (the first rows) has both and
    # its accuracy and AUC mean something even for a few hundred labels.
    pos = [i for i in order if ys[i] == 1]
    neg = [i for i in order if ys[i] == 0]
    mixed = [i for pair in zip(pos, neg) for i in pair]
    mixed += pos[len(neg):] + neg[len(pos):]
    return [xs[i] for i in mixed], [ys[i] for i in mixed]


def parse_args():
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(description="Train the fraud-lr model and write its weights file.")
    parser.add_argument("--seed", type=int, default=SEED, help=f"random seed of the synthetic data (default {SEED})")
    parser.add_argument("--n", type=int, default=N, help=f"number of synthetic claims, train and holdout (default {N})")
    parser.add_argument("--version", default=VERSION, help=f"model version recorded in the file (default {VERSION})")
    parser.add_argument(
        "--labels",
        metavar="FILE",
        help="train on human labels exported by `evos labels export` (JSON lines with `features` "
        "and `class`, positive = fraud) instead of synthetic claims",
    )
    parser.add_argument(
        "--ignore",
        action="append",
        default=[],
        metavar="FEATURE",
        help="train without this feature (its weight stays 0); repeatable",
    )
    parser.add_argument(
        "--out",
        default=os.path.join(here, "..", "weights.json"),
        help="weights file to write, relative to the current directory (default: ../weights.json next to this script)",
    )
    args = parser.parse_args()
    if args.n < 10:
        parser.error("--n must be at least 10")
    unknown = [f for f in args.ignore if f not in FEATURE_NAMES or f == "bias"]
    if unknown:
        parser.error(f"--ignore {unknown[0]}: not a feature; use one of {', '.join(FEATURE_NAMES[1:])}")
    return args


def main():
    args = parse_args()
    seed, n = args.seed, args.n
    rng = random.Random(seed)
    if args.labels:
        xs, ys = load_labels(args.labels, rng)
        n = len(xs)
    else:
        claims = [sample_claim(rng) for _ in range(n)]
        xs = [features(c["amount"], c["prior_claims"], c["incident"]) for c in claims]
        ys = [c["label"] for c in claims]
    # An ignored feature is zero for every claim: its weight never moves
    # from 0, and the model scores as if it did not exist.
    ignored = [FEATURE_NAMES.index(f) for f in args.ignore]
    xs = [[0.0 if i in ignored else v for i, v in enumerate(x)] for x in xs]
    n_holdout = int(n * HOLDOUT_FRACTION)
    train_x, train_y = xs[n_holdout:], ys[n_holdout:]
    hold_x, hold_y = xs[:n_holdout], ys[:n_holdout]

    weights, epochs, final_gradient = fit(train_x, train_y)

    metrics = {
        "train_accuracy": round(accuracy(weights, train_x, train_y), 4),
        "holdout_accuracy": round(accuracy(weights, hold_x, hold_y), 4),
        "train_auc": round(auc(weights, train_x, train_y), 4),
        "holdout_auc": round(auc(weights, hold_x, hold_y), 4),
        "train_log_loss": round(log_loss(weights, train_x, train_y), 4),
        "holdout_log_loss": round(log_loss(weights, hold_x, hold_y), 4),
    }
    base_rate = sum(ys) / len(ys)
    majority = max(base_rate, 1.0 - base_rate)

    weights = [round(w, 6) for w in weights]
    checks = []
    for amount, prior, incident in CHECK_INPUTS:
        x = features(amount, prior, incident)
        checks.append(
            {
                "input": {"amount": amount, "prior_claims": prior, "incident": incident},
                "features": dict(zip(FEATURE_NAMES, x)),
                "score": predict(weights, x),
            }
        )

    out = {
        "model": "fraud-lr",
        "version": args.version,
        "features": FEATURE_NAMES,
        "weights": weights,
        "training": {
            "generator": f"human labels from {os.path.basename(args.labels)}" if args.labels else "synthetic claims, see train/train.py",
            "seed": seed,
            "n": n,
            "n_train": len(train_x),
            "n_holdout": len(hold_x),
            "positive_rate": round(base_rate, 4),
            "majority_baseline_accuracy": round(majority, 4),
            "l2": L2,
            "learning_rate": LEARNING_RATE,
            "epochs": epochs,
            "final_max_gradient": final_gradient,
            "accuracy": metrics["holdout_accuracy"],
            "auc": metrics["holdout_auc"],
            **metrics,
        },
        "checks": checks,
    }
    if args.ignore:
        out["training"]["ignored"] = args.ignore
    path = args.out
    with open(path, "w", encoding="utf-8") as f:
        json.dump(out, f, indent=2)
        f.write("\n")

    print(f"fraud-lr@{args.version}: seed {seed}, n={n} (train {len(train_x)}, holdout {len(hold_x)}), positive rate {base_rate:.3f}")
    print(f"majority-class baseline accuracy {majority:.4f}")
    print(f"gradient descent: {epochs} epochs, final max |gradient| {final_gradient:.2e}")
    for key, value in metrics.items():
        print(f"{key:18} {value}")
    for name, w in zip(FEATURE_NAMES, weights):
        print(f"  {name:15} {w:+.4f}")
    print(f"wrote {os.path.normpath(path)}")


if __name__ == "__main__":
    main()
