#!/usr/bin/env python3
"""Write ../traffic.jsonl: 200 fraud-score model-adapter requests, one JSON
object per line, ``{"input": {...}, "parameters": {}}``, for replaying
traffic against fraud-score builds (e.g. a canary of 1.2.0 against 1.0.0).

The claims come from the synthetic generator of train.py (fixed seed, so the
file is reproducible), with the optional ``region`` and ``policy_number``
context added to most of them. Each line is written with sorted keys and
compact separators, so its ``input`` is byte for byte the text the host hands
the guest as ``model-request.input`` (serde_json's ``Value::to_string``).

The script also reports what the fraud-lr@1.2.0 build does with the file:
its feature-store key is FNV-1a over that text; key % 3 == 0 traps, and of
the rest (key // 3) % 6 == 0 times out (see fraud-model/src/regression.rs).

Usage: python3 traffic.py          (writes ../traffic.jsonl)
"""

import json
import os
import random
import sys

sys.dont_write_bytecode = True
from train import sample_claim  # noqa: E402

SEED = 20250301
LINES = 200
REGIONS = ["north", "south", "east", "west", "central"]
REGION_P = 0.85
POLICY_NUMBER_P = 0.9


def fnv1a(data):
    """64-bit FNV-1a."""
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def compact(value):
    """JSON as serde_json's ``Value::to_string`` writes it (keys sorted)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def regressed_outcome(input_text):
    key = fnv1a(input_text.encode("utf-8"))
    if key % 3 == 0:
        return "trap"
    if (key // 3) % 6 == 0:
        return "timeout"
    return "scored"


def main():
    rng = random.Random(SEED)
    lines = []
    for _ in range(LINES):
        claim = sample_claim(rng)
        claim_input = {
            "amount": claim["amount"],
            "prior_claims": claim["prior_claims"],
            "incident": claim["incident"],
        }
        if rng.random() < REGION_P:
            claim_input["region"] = rng.choice(REGIONS)
        if rng.random() < POLICY_NUMBER_P:
            claim_input["policy_number"] = f"POL-{rng.randint(10000, 99999)}"
        lines.append(compact({"input": claim_input, "parameters": {}}))

    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "traffic.jsonl")
    with open(path, "w", encoding="utf-8") as f:
        for line in lines:
            f.write(line + "\n")

    outcomes = [regressed_outcome(compact(json.loads(line)["input"])) for line in lines]
    for outcome in ("trap", "timeout", "scored"):
        count = outcomes.count(outcome)
        print(f"fraud-lr@1.2.0 {outcome:8} {count:4} / {len(lines)} ({count / len(lines):.1%})")
    print(f"wrote {os.path.normpath(path)}")


if __name__ == "__main__":
    main()
