import unittest

from logic import records


class RecordsTest(unittest.TestCase):
    def test_objects_and_arrays_become_records_and_records_need_an_id(self) -> None:
        self.assertEqual(len(records({"id": "a"})), 1)
        self.assertEqual(len(records([{"id": "a"}, {"id": "b"}])), 2)
        with self.assertRaisesRegex(ValueError, "record 1"):
            records([{"id": "a"}, {"x": 1}])
        with self.assertRaises(ValueError):
            records(3)


if __name__ == "__main__":
    unittest.main()
