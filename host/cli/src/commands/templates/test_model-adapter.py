import unittest

from logic import score


class ScoreTest(unittest.TestCase):
    def test_scores_rise_with_the_amount_and_stay_between_0_and_1(self) -> None:
        small, large = score(250), score(100_000)
        self.assertTrue(0 < small < 0.5, small)
        self.assertTrue(0.5 < large < 1, large)
        self.assertAlmostEqual(small, 0.1352, places=3)


if __name__ == "__main__":
    unittest.main()
