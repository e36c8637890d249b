"""Ratio table of two benchmark runs in `spikescan bench --json` format (one JSON record a
line): spikescan's against PyTorch's (tools/bench_torch.py) or llama.cpp's
(tools/bench_llamacpp.py), per named shape or model.

    python3 tools/compare.py bench/out/spikescan.jsonl bench/out/torch.jsonl [--markdown]
    python3 tools/compare.py bench/out/spikescan.jsonl bench/out/llamacpp.jsonl

With --regress, two spikescan runs (an older commit's, then a newer one's; see
bench/regress.sh): the change per record, and every record more than --threshold (20%)
slower is flagged as a regression (exit status 1 when there is one). A file may hold
several runs of the same records (repeated rounds): the best of each is compared.

The ratio is always "how many times faster spikescan is": the other's time / spikescan's time
for times (µs, ms, s), spikescan's rate / the other's rate for rates (tokens/s, clips/s,
images/s). Records present in only one file are listed apart.
"""
import argparse
import json
import sys

LOWER_IS_BETTER = {"µs", "ms", "s", "count", "MB", "× minimum"}
SKIP_UNITS = {"GB/s", "GFLOP/s", "fraction"}


def load(path):
    """Records by (name, params); of repeated records, the best (least time, highest rate)."""
    with open(path, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    out = {}
    for r in rows:
        if r.get("unit") in SKIP_UNITS:
            continue
        key = (r["name"], r["params"])
        if key in out:
            better = min if r["unit"] in LOWER_IS_BETTER else max
            r = dict(r, value=better(out[key]["value"], r["value"]))
        out[key] = r
    return out


def regress(old, new, threshold, markdown):
    """Per-record speed change from the old run to the new; flags slowdowns over threshold."""
    rows, flagged = [], []
    for key, r in new.items():
        o = old.get(key)
        if o is None or o["unit"] != r["unit"] or o["value"] <= 0 or r["value"] <= 0:
            continue
        # speed of new relative to old: > 1 faster, < 1 slower.
        speed = o["value"] / r["value"] if r["unit"] in LOWER_IS_BETTER else r["value"] / o["value"]
        bad = speed < 1 / (1 + threshold)
        rows.append((key[0], key[1], o["value"], r["value"], r["unit"], speed, bad))
        if bad:
            flagged.append(key)
    if markdown:
        print("\n| benchmark | params | old | new | unit | new speed ÷ old | |")
        print("|---|---|---|---|---|---|---|")
        for n, pa, ov, nv, u, sp, bad in rows:
            print(f"| {n} | {pa} | {ov:.4g} | {nv:.4g} | {u} | {sp:.3g}x | {'**regression**' if bad else ''} |")
    else:
        print(f"\n{'benchmark':<40} {'params':<32} {'old':>12} {'new':>12} {'unit':<9} new÷old")
        for n, pa, ov, nv, u, sp, bad in rows:
            print(f"{n:<40} {pa:<32} {ov:>12.4g} {nv:>12.4g} {u:<9} {sp:.3g}x{'  REGRESSION' if bad else ''}")
    print(f"\n{len(flagged)} of {len(rows)} records more than {threshold:.0%} slower"
          + (": " + ", ".join(f"{n} [{p}]" for n, p in flagged) if flagged else ""))
    return 1 if flagged else 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("spikescan", help="spikescan's records (with --regress: the older run)")
    ap.add_argument("torch", help="PyTorch's or llama.cpp's records (with --regress: the newer spikescan run)")
    ap.add_argument("--markdown", action="store_true", help="a Markdown table")
    ap.add_argument("--regress", action="store_true", help="compare two spikescan runs")
    ap.add_argument("--threshold", type=float, default=0.2, help="slowdown flagged by --regress")
    a = ap.parse_args(argv)
    ours, theirs = load(a.spikescan), load(a.torch)
    if not ours or not theirs:
        raise SystemExit("compare.py: one of the files holds no records")
    if a.regress:
        o, n = next(iter(ours.values())), next(iter(theirs.values()))
        print(f"old: {o['adapter']} ({o['backend']}, {o['driver']})")
        print(f"new: {n['adapter']} ({n['backend']}, {n['driver']})")
        return regress(ours, theirs, a.threshold, a.markdown)
    # Per-layer records (--layers) have no PyTorch counterpart.
    ours = {k: r for k, r in ours.items() if r.get("suite") != "layer"}
    dev = lambda rs: next(iter(rs.values()))  # noqa: E731
    o, t = dev(ours), dev(theirs)
    other = "llama.cpp" if str(t.get("backend", "")).startswith("llama.cpp") else "PyTorch"
    print(f"{'spikescan:':<11}{o['adapter']} ({o['backend']}, {o['driver']})")
    print(f"{other + ':':<11}{t['adapter']} ({t['backend']}, {t['driver']})")
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
        print(f"\n| benchmark | params | spikescan | {other} | unit | spikescan speed-up |")
        print("|---|---|---|---|---|---|")
        for n, pa, v, pv, u, ratio in rows:
            print(f"| {n} | {pa} | {v:.4g} | {pv:.4g} | {u} | {ratio:.3g}x |")
    else:
        print(f"\n{'benchmark':<40} {'params':<32} {'spikescan':>12} {other:>12} {'unit':<9} speed-up")
        for n, pa, v, pv, u, ratio in rows:
            print(f"{n:<40} {pa:<32} {v:>12.4g} {pv:>12.4g} {u:<9} {ratio:.3g}x")
    only = sorted(set(ours) - set(theirs)) + sorted(set(theirs) - set(ours))
    if only:
        print(f"\nin one run only: {', '.join(f'{n} [{p}]' for n, p in only)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
