import unittest

from logic import action_kind


class ActionKindTest(unittest.TestCase):
    def test_below_the_threshold_approves_and_at_or_above_reviews(self) -> None:
        self.assertEqual(action_kind(250, 1000), "approve")
        self.assertEqual(action_kind(1000, 1000), "review")
        self.assertEqual(action_kind(5000, 1000), "review")


if __name__ == "__main__":
    unittest.main()
