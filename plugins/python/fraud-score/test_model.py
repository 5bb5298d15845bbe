"""The Python model against the training script's reference checks and the
Rust crate's own tests (plugins/fraud-model)."""

import os
import unittest

from model import FEATURES, InvalidClaim, Weights, features, keyword_count, label, reference_checks, score_claim

HERE = os.path.dirname(os.path.abspath(__file__))


def weights_text(name: str) -> str:
    with open(os.path.join(HERE, "..", "..", "fraud-score", name), encoding="utf-8") as f:
        return f.read()


class ModelTest(unittest.TestCase):
    def test_every_weights_file_matches_the_training_script(self) -> None:
        for name, version in [("weights.json", "1.0.0"), ("weights-1.1.0.json", "1.1.0"), ("weights-1.3.0.json", "1.3.0")]:
            text = weights_text(name)
            weights = Weights(text)
            self.assertEqual(weights.model, f"fraud-lr@{version}")
            checks = reference_checks(text)
            self.assertTrue(checks)
            for check in checks:
                out = score_claim(weights, check["input"])
                for feature in FEATURES:
                    self.assertAlmostEqual(out["features"][feature], check["features"][feature], delta=1e-12)
                self.assertAlmostEqual(out["score"], check["score"], delta=1e-9)

    def test_the_shipped_weights_are_the_rust_builds(self) -> None:
        with open(os.path.join(HERE, "weights.json"), encoding="utf-8") as f:
            self.assertEqual(f.read(), weights_text("weights.json"))

    def test_keywords_match_whole_words_only(self) -> None:
        self.assertEqual(keyword_count("FIRE!! Total   loss; no-witnesses"), 3)
        self.assertEqual(keyword_count("wildfire near the firehouse, cashew"), 0)
        self.assertEqual(keyword_count("cash cash cash"), 1)

    def test_rejects_bad_fields_by_name(self) -> None:
        cases = [
            ({"prior_claims": 0, "incident": "x"}, "input.amount is missing"),
            ({"amount": -1, "prior_claims": 0, "incident": "x"}, "input.amount"),
            ({"amount": 1, "prior_claims": 1.5, "incident": "x"}, "prior_claims"),
            ({"amount": 1, "prior_claims": 1, "incident": 7}, "incident"),
            ({"amount": 1, "prior_claims": 1, "incident": "x", "region": 1}, "region"),
            ([1], "input must be a JSON object"),
        ]
        for fields, message in cases:
            with self.assertRaisesRegex(InvalidClaim, message.replace(".", r"\.")):
                score_claim(Weights(weights_text("weights.json")), fields)

    def test_labels_follow_thresholds(self) -> None:
        self.assertEqual([label(s) for s in (0.29, 0.3, 0.69, 0.7)], ["low", "medium", "medium", "high"])

    def test_round_and_near_threshold_amounts(self) -> None:
        x = features(9500.0, 0, "a long enough description of what happened to the car")
        self.assertEqual((x[3], x[6]), (1.0, 1.0))
        x = features(1000.5, 0, "short")
        self.assertEqual((x[3], x[5], x[6]), (0.0, 1.0, 0.0))


if __name__ == "__main__":
    unittest.main()
