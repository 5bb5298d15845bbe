import unittest

from logic import decide, limits


class PayoutLimitTest(unittest.TestCase):
    def test_allows_below_escalates_up_to_the_limit_and_denies_above(self) -> None:
        low, high = limits("1000", "10000")
        self.assertEqual(decide("approve-payout", 999, low, high), ("allow", ""))
        self.assertEqual(decide("approve-payout", 1000, low, high)[0], "escalate")
        self.assertEqual(decide("approve-payout", 10000, low, high)[0], "escalate")
        verdict, reason = decide("approve-payout", 20000, low, high)
        self.assertEqual(verdict, "deny")
        self.assertIn("10000.00", reason)

    def test_a_payload_without_a_valid_amount_denies(self) -> None:
        self.assertIn("no numeric amount", decide("approve-payout", None, 1, 2)[1])
        self.assertIn("no numeric amount", decide("approve-payout", "250", 1, 2)[1])
        self.assertIn("not a valid payout", decide("approve-payout", -5, 1, 2)[1])

    def test_limits_come_from_config_and_fail_closed_naming_the_key(self) -> None:
        self.assertEqual(limits("100", "500"), (100.0, 500.0))
        with self.assertRaisesRegex(ValueError, "allow-below"):
            limits(None, "500")
        with self.assertRaisesRegex(ValueError, "deny-above"):
            limits("100", "lots")
        with self.assertRaisesRegex(ValueError, "must not exceed"):
            limits("900", "500")


if __name__ == "__main__":
    unittest.main()
