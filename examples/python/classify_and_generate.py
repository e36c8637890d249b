"""spikescan from Python, notebook-sized: classify a digit with the bundled Spikformer and
print what `spikescan run --stats` prints (top classes, each LIF layer's firing rate and
synaptic operations, the energy estimate); stream a clip through the Spiking LMUFormer;
generate text with the bundled Mamba.

    pip install ./python
    python examples/python/classify_and_generate.py
"""
import os

import numpy as np

import spikescan

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
models = os.path.join(root, "models")
print(spikescan.Device())  # the adapter the models run on (SPIKESCAN_ADAPTER overrides)

# --- Classify an image, with --stats-style output ----------------------------------------
m = spikescan.load(os.path.join(models, "spikformer-digits"))
image = os.path.join(models, "spikformer-digits", "examples", "0-label-7.png")
for p in m.classify(image, top_k=3):
    print(f"  {p['class']:>5} {p['logit']:>10.4f}  {p['label']}")
st = m.stats(image)
print(f"{'LIF layer':<30} {'firing rate':>12} {'SOPs/sample (M)':>16}")
for layer in st["layers"]:
    print(f"{layer['layer']:<30} {layer['firing_rate']:>12.4f} {layer['sops'] / 1e6:>16.3f}")
print(f"energy estimate: {st['energy_mj']:.4f} mJ per sample")

# The same model on a batch already normalised [B, 3, H, W] (float32): logits [B, classes].
x = np.random.default_rng(0).standard_normal((4, *m.input_shape)).astype(np.float32)
print("batch logits", m(x).shape)

# --- Stream a clip frame by frame (LMUFormer) --------------------------------------------
lmu = spikescan.load(os.path.join(models, "spiking-lmuformer-digits"))
frames, mel = lmu.input_shape
clip = np.zeros((frames, mel), np.float32)  # a silent clip (normalised fbank features)
s = lmu.stream()
outs = [s.push(clip[t]) for t in range(frames)]
outs = [o for o in outs if o is not None] + s.finish()
print(f"streamed {len(outs)} frames; final top-1: {lmu.labels[int(np.argmax(outs[-1][0]))]}")

# --- Generate text (Mamba) ---------------------------------------------------------------
lm = spikescan.load(os.path.join(models, "mamba-pydoc"))
prompt = "The with statement"
print(prompt, end="", flush=True)
for piece in lm.generate(prompt, max_new_tokens=40):  # greedy; temperature=, top_k=, top_p=, seed=
    print(piece, end="", flush=True)
print()
