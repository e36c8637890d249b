"""Sessions and the rest of the API: Mamba states (prefill, step, snapshot, restore, copy
slot) agree with generation; LMUFormer streams snapshot and restore; a .pth converts and
loads; devices and adapters; GPU calls release the GIL."""
import os
import threading
import time

import numpy as np

import spikescan
from conftest import FIXTURES, MODELS, read_safetensors

MAMBA = os.path.join(MODELS, "mamba-pydoc")


def test_mamba_state_prefill_and_step_follow_greedy_generation():
    m = spikescan.load(MAMBA)
    prompt = m.encode("The with statement")
    greedy = list(m.generate(prompt, 6))
    st = m.state(1)
    logits = m.prefill(np.array([prompt]), st)
    assert logits.shape == (1, logits.shape[1]) and logits.shape[1] >= m.num_classes
    tokens = []
    for _ in range(6):
        t = int(np.argmax(logits[0, :m.num_classes]))
        tokens.append(t)
        logits = m.step([t], st)
    assert tokens == greedy
    # The prefill's last-position logits are the prompt logits' last row (to rounding).
    full = m(np.array([prompt]))
    first = m.prefill(np.array([prompt]), m.state(1))
    assert np.allclose(first[0], full[0, -1], rtol=1e-4, atol=1e-4)


def test_mamba_state_snapshot_restore_and_copy_slot():
    m = spikescan.load(MAMBA)
    st = m.state(2)
    assert st.batch == 2
    ids = np.array([[5, 6, 7, 8], [9, 10, 11, 12]])
    m.prefill(ids, st)
    snap = st.snapshot()
    a = m.step([3, 4], st)
    b = m.step([3, 4], st)
    assert not np.array_equal(a, b)
    st.restore(snap)
    assert np.array_equal(m.step([3, 4], st), a)
    # Slot 1 seeded from slot 0 of the snapshot decodes as slot 0 does.
    two = snap.snapshot()
    two.copy_slot(1, snap, 0)
    out = m.step([3, 3], two)
    assert np.array_equal(out[0], out[1])
    try:
        st.restore(m.state(3))
        raise AssertionError("restoring a state of another batch must fail")
    except spikescan.InputError as e:
        assert "batch" in str(e)


def test_generation_is_an_iterator_of_text_pieces_and_sampling_is_seeded():
    m = spikescan.load(MAMBA)
    g = m.generate("The module", max_new_tokens=5, temperature=1.0, top_k=20, seed=11)
    assert iter(g) is g
    first = next(g)
    assert isinstance(first, str)
    rest = list(g)
    assert len(rest) == 4 and list(g) == []
    assert len(g.new_tokens) == 5 and g.tokens[:len(m.encode("The module"))] == m.encode("The module")
    again = m.generate("The module", max_new_tokens=5, temperature=1.0, top_k=20, seed=11)
    assert "".join(again) == first + "".join(rest) == g.text == m.decode(g.new_tokens)


def test_lmuformer_stream_snapshot_and_restore():
    m = spikescan.load(os.path.join(MODELS, "spiking-lmuformer-digits"))
    x = read_safetensors(os.path.join(MODELS, "spiking-lmuformer-digits", "heldout.safetensors"))["input"]
    clip = np.ascontiguousarray(x[:2], np.float32)
    s = m.stream(streams=2)
    assert s.streams == 2
    half = clip.shape[1] // 2
    for t in range(half):
        s.push(clip[:, t])
    snap = s.snapshot()
    first = [s.push(clip[:, t]) for t in range(half, clip.shape[1])] + s.finish()
    s.restore(snap)
    assert s.position == (half, half - spikescan.LOOKAHEAD)
    second = [s.push(clip[:, t]) for t in range(half, clip.shape[1])] + s.finish()
    assert len(first) == len(second) == clip.shape[1] - half + spikescan.LOOKAHEAD
    for a, b in zip(first, second):
        assert a.shape == (2, m.num_classes) and np.array_equal(a, b)
    whole = m(clip, all_seq=True)
    assert np.allclose(first[-1], whole[:, -1], rtol=1e-4, atol=1e-4)
    try:
        s.push(clip[:, 0])
        raise AssertionError("pushing into a finished stream must fail")
    except spikescan.InputError as e:
        assert "finished" in str(e)


def test_a_pth_checkpoint_converts_and_loads_to_the_same_logits(tmp_path):
    name = "spiking-lmuformer-small"
    want = spikescan.load(os.path.join(FIXTURES, name))
    x = read_safetensors(os.path.join(FIXTURES, name, "io.safetensors"))["input"]
    got = spikescan.load(os.path.join(FIXTURES, name + ".pth"),
                         config=os.path.join(FIXTURES, name, "config.json"))
    assert got.architecture == "spiking_lmuformer"
    assert np.array_equal(got(x), want(x))
    # With a preset, overrides and a kept directory.
    out = tmp_path / "converted"
    got = spikescan.load(os.path.join(FIXTURES, "meta-spikeformer-exact-t1.pth"),
                         config=os.path.join(FIXTURES, "meta-spikeformer-exact-t1", "config.json"),
                         set={"T": 1}, out_dir=out)
    assert (out / "model.safetensors").exists() and (out / "config.json").exists()
    ref = spikescan.load(os.path.join(FIXTURES, "meta-spikeformer-exact-t1"))
    x = read_safetensors(os.path.join(FIXTURES, "meta-spikeformer-exact-t1", "io.safetensors"))["input"]
    assert np.array_equal(got(x), ref(x))


def test_devices_and_adapters():
    ads = spikescan.adapters()
    assert ads and {"index", "name", "backend", "device_type", "driver"} <= set(ads[0])
    d = spikescan.Device(adapter=ads[0]["index"])
    assert d.adapter["name"] == ads[0]["name"]
    assert {"f16", "subgroups", "max_storage_buffer_binding_size"} <= set(d.features)
    m = spikescan.load(os.path.join(MODELS, "spikformer-digits"), device=d)
    assert m.device.adapter["name"] == ads[0]["name"]
    assert "spikformer" in repr(m) and "Device" in repr(d)
    assert set(spikescan.ARCHITECTURES) == {"spikformer", "meta_spikeformer", "lmuformer",
                                            "spiking_lmuformer", "mamba", "falcon_mamba"}


def test_gpu_calls_release_the_gil():
    m = spikescan.load(MAMBA)
    # Grow the batch until one call lasts long enough to watch another thread
    # run inside it: how long a call takes depends on the machine.
    rows = 2
    while True:
        ids = np.tile(np.arange(1, 65), (rows, 1))
        m(ids)  # warm: pipelines compiled for this shape
        s0 = time.perf_counter()
        m(ids)
        if time.perf_counter() - s0 > 0.15 or rows >= 256:
            break
        rows *= 2
    ticks = []
    stop = threading.Event()

    def ticker():
        while not stop.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0.001)

    th = threading.Thread(target=ticker)
    th.start()
    time.sleep(0.01)
    t0 = time.perf_counter()
    m(ids)
    t1 = time.perf_counter()
    stop.set()
    th.join()
    assert t1 - t0 > 0.05, "the call is too short to tell"
    inside = [t for t in ticks if t0 + 0.02 < t < t1 - 0.01]
    assert inside, f"no other Python thread ran during a {t1 - t0:.3f} s GPU call"
