"""Ratio table of two benchmark runs in `spikescan bench --json` format (one JSON record a
line): spikescan's against PyTorch's (tools/bench_torch.py), per named shape or model.

    python3 tools/compare.py bench/out/spikescan.jsonl bench/out/torch.jsonl [--markdown]

The ratio is always "how many times faster spikescan is": PyTorch's time / spikescan's time
for times (µs, ms, s), spikescan's rate / PyTorch's rate for rates (tokens/s, clips/s,
images/s). Records present in only one file are listed apart.
"""
import argparse
import json
import sys

LOWER_IS_BETTER = {"µs", "ms", "s"}
SKIP_UNITS = {"GB/s", "GFLOP/s", "fraction"}


def load(path):
    with open(path, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return {(r["name"], r["params"]): r for r in rows if r.get("unit") not in SKIP_UNITS}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("spikescan")
    ap.add_argument("torch")
    ap.add_argument("--markdown", action="store_true", help="a Markdown table")
    a = ap.parse_args(argv)
    ours, theirs = load(a.spikescan), load(a.torch)
    if not ours or not theirs:
        raise SystemExit("compare.py: one of the files holds no records")
    dev = lambda rs: next(iter(rs.values()))  # noqa: E731
    o, t = dev(ours), dev(theirs)
    print(f"spikescan: {o['adapter']} ({o['backend']}, {o['driver']})")
    print(f"PyTorch:   {t['adapter']} ({t['backend']}, {t['driver']})")
    rows = []
    for key, r in ours.items():
        if key not in theirs or theirs[key]["unit"] != r["unit"]:
            continue
        p = theirs[key]
        if r["value"] <= 0 or p["value"] <= 0:
            continue
        ratio = p["value"] / r["value"] if r["unit"] in LOWER_IS_BETTER else r["value"] / p["value"]
        rows.append((key[0], key[1], r["value"], p["value"], r["unit"], ratio))
    if a.markdown:
        print("\n| benchmark | params | spikescan | PyTorch | unit | spikescan speed-up |")
        print("|---|---|---|---|---|---|")
        for n, pa, v, pv, u, ratio in rows:
            print(f"| {n} | {pa} | {v:.4g} | {pv:.4g} | {u} | {ratio:.3g}x |")
    else:
        print(f"\n{'benchmark':<40} {'params':<32} {'spikescan':>12} {'PyTorch':>12} {'unit':<9} speed-up")
        for n, pa, v, pv, u, ratio in rows:
            print(f"{n:<40} {pa:<32} {v:>12.4g} {pv:>12.4g} {u:<9} {ratio:.3g}x")
    only = sorted(set(ours) - set(theirs)) + sorted(set(theirs) - set(ours))
    if only:
        print(f"\nin one run only: {', '.join(f'{n} [{p}]' for n, p in only)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
