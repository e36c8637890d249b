"""A fixture of each architecture (tests/fixtures/*/: a model directory and io.safetensors
with the official code's logits) matches its expected logits from Python, at the tolerance
the Rust tests use (relative L2), with the same top-1."""
import os

import numpy as np
import pytest

import spikescan
from conftest import FIXTURES, read_safetensors, rel_l2

# (fixture, tolerance): as tests/spikformer.rs, tests/meta_spikeformer.rs, tests/lmuformer.rs
# and tests/mamba.rs.
CLASSIFIERS = [
    ("spikformer-imagenet-exact", 1e-6),
    ("spikformer-cifar-exact-t4", 1e-6),
    ("meta-spikeformer-exact-t1", 1e-6),
    ("meta-spikeformer-exact-t4-kd", 1e-6),
    ("lmuformer-small", 1e-5),
    ("spiking-lmuformer-small", 1e-5),
]
LANGUAGE = [("mamba-ssm-untied", 1e-3), ("mamba-hf-tied", 1e-3)]


def io(name):
    return read_safetensors(os.path.join(FIXTURES, name, "io.safetensors"))


@pytest.mark.parametrize("name,tol", CLASSIFIERS)
def test_classifier_fixture_matches_its_reference_logits(name, tol):
    m = spikescan.load(os.path.join(FIXTURES, name))
    t = io(name)
    got = m(t["input"])
    want = t["logits"]
    assert got.shape == want.shape
    err = rel_l2(got, want)
    assert err <= tol, f"{name}: relative L2 {err:.3e}"
    assert (got.argmax(1) == want.argmax(1)).all()
    if "logits_all" in t:
        err = rel_l2(m(t["input"], all_seq=True), t["logits_all"])
        assert err <= tol, f"{name} all_seq: relative L2 {err:.3e}"


@pytest.mark.parametrize("name,tol", LANGUAGE)
def test_mamba_fixture_matches_its_reference_logits_and_greedy_tokens(name, tol):
    m = spikescan.load(os.path.join(FIXTURES, name))
    t = io(name)
    got = m(t["input_ids"])
    assert got.shape == t["logits"].shape
    err = rel_l2(got, t["logits"])
    assert err <= tol, f"{name}: relative L2 {err:.3e}"
    greedy = [int(v) for v in t["greedy"][0]]
    prompt = [int(v) for v in t["input_ids"][0]]
    g = m.generate(prompt, max_new_tokens=len(greedy) - len(prompt))
    assert list(g) == greedy[len(prompt):]
    assert g.tokens == greedy
