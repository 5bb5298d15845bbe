import unittest

from logic import decide


class DecideTest(unittest.TestCase):
    def test_allows_up_to_the_limit_escalates_above_and_denies_no_amount(self) -> None:
        self.assertEqual(decide(250, 1000.0)[0], "allow")
        self.assertEqual(decide(1000, 1000.0)[0], "allow")
        self.assertEqual(decide(1000.5, 1000.0)[0], "escalate")
        self.assertEqual(decide(None, 1000.0)[0], "deny")
        self.assertEqual(decide("250", 1000.0)[0], "deny")
        self.assertEqual(decide(-1, 1000.0)[0], "deny")


if __name__ == "__main__":
    unittest.main()
