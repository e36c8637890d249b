"""Tests of tools/convert.py that need no torch: refusals and config handling.
(Round trips of real torch.save files are tested from Rust: tests/convert.rs.)

    python3 tools/test_convert.py
"""
import io
import json
import os
import pickle
import sys
import tempfile
import unittest
import zipfile

sys.path.insert(0, os.path.dirname(__file__))
import convert  # noqa: E402


class Evil:
    def __reduce__(self):
        return (os.system, ("echo this must never run",))


def zip_with(pkl_bytes):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("archive/data.pkl", pkl_bytes)
    return buf.getvalue()


class ConvertTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp()

    def write(self, name, data):
        p = os.path.join(self.dir, name)
        with open(p, "wb") as f:
            f.write(data)
        return p

    def run_convert(self, *args):
        err = io.StringIO()
        old, sys.stderr = sys.stderr, err
        try:
            code = convert.main(list(args))
        finally:
            sys.stderr = old
        return code, err.getvalue()

    def test_a_pickle_that_would_run_code_is_refused(self):
        p = self.write("evil.pth", zip_with(pickle.dumps({"model": Evil()})))
        code, err = self.run_convert(p, os.path.join(self.dir, "out"), "--preset", "spikformer-8-384")
        self.assertEqual(code, 2)
        self.assertIn("system", err)
        self.assertIn("refusing", err)
        self.assertFalse(os.path.exists(os.path.join(self.dir, "out", "model.safetensors")))

    def test_a_file_that_is_not_a_zip_checkpoint_is_refused_with_advice(self):
        p = self.write("legacy.pth", pickle.dumps({"a": 1}))
        code, err = self.run_convert(p, os.path.join(self.dir, "out"), "--preset", "spikformer-8-384")
        self.assertEqual(code, 2)
        self.assertIn("not a zip-format", err)

    def test_a_checkpoint_without_tensors_says_where_it_looked(self):
        p = self.write("empty.pth", zip_with(pickle.dumps({"epoch": 3})))
        code, err = self.run_convert(p, os.path.join(self.dir, "out"), "--preset", "spikformer-8-384")
        self.assertEqual(code, 2)
        self.assertIn("no state dict", err)

    def test_no_architecture_and_a_missing_file_are_errors(self):
        code, err = self.run_convert(os.path.join(self.dir, "nope.pth"), os.path.join(self.dir, "o"))
        self.assertEqual(code, 2)
        self.assertIn("--preset", err)
        code, err = self.run_convert(os.path.join(self.dir, "nope.pth"), os.path.join(self.dir, "o"), "--preset", "spikformer-8-384")
        self.assertEqual(code, 2)
        self.assertIn("does not exist", err)

    def test_set_overrides_parse_json_values(self):
        self.assertEqual(convert.parse_value("4"), 4)
        self.assertEqual(convert.parse_value("true"), True)
        self.assertEqual(convert.parse_value("[1, 2]"), [1, 2])
        self.assertEqual(convert.parse_value("imagenet"), "imagenet")
        self.assertEqual(json.loads(json.dumps(convert.PRESETS["meta-spikeformer-8-512"]))["embed_dim"], [128, 256, 512, 640])


if __name__ == "__main__":
    unittest.main(verbosity=1)
