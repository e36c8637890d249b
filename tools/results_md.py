"""Markdown tables for bench/RESULTS.md from `spikescan bench --out` files (JSON lines).

    python3 tools/results_md.py bench/out/gpu-*.jsonl [--top 8] > tables.md

Prints the kernel table (µs, GB/s, GFLOP/s, fraction of the measured ceilings on one row),
the model table, and for each profiled model pass (`--layers`) its most expensive layers:
each distinct op and shape, its median µs, how many dispatches of it the pass made, and
their share of the pass's GPU time.
"""
import argparse
import json
import re
import sys

SUFFIXES = {" GB/s": "gbs", " GFLOP/s": "gfs", " of ceiling": "frac"}


def load(paths):
    rows = []
    for p in paths:
        with open(p, encoding="utf-8") as f:
            rows += [json.loads(line) for line in f if line.strip()]
    return rows


def merge(rows):
    """Kernel-style records: one dict per (name, params) with us/gbs/gfs/frac."""
    out, index = [], {}
    for r in rows:
        base, field = r["name"], "value"
        for suf, key in SUFFIXES.items():
            if r["name"].endswith(suf):
                base, field = r["name"][: -len(suf)], key
                break
        k = (r["suite"], base, r["params"])
        if k not in index:
            index[k] = {"suite": r["suite"], "name": base, "params": r["params"], "unit": r["unit"]}
            out.append(index[k])
        index[k][field] = r["value"]
        if field == "value":
            index[k]["unit"] = r["unit"]
    return out


def num(v, digits=3):
    if v is None:
        return ""
    if v >= 1000:
        return f"{v:,.0f}"
    return f"{v:.{digits}g}"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="+")
    ap.add_argument("--top", type=int, default=8, help="layers listed per profiled pass")
    a = ap.parse_args(argv)
    rows = load(a.files)
    if not rows:
        raise SystemExit("results_md.py: no records")
    r0 = rows[0]
    print(f"Device: {r0['adapter']} ({r0['backend']}, {r0['driver']})\n")
    recs = merge(rows)
    kernels = [r for r in recs if r["suite"] == "kernel"]
    if kernels:
        print("| kernel | shape | µs | GB/s | GFLOP/s | fraction of measured ceiling |")
        print("|---|---|---|---|---|---|")
        for r in kernels:
            if r["unit"] == "skipped":
                print(f"| {r['name']} | {r['params']} | skipped | | | |")
                continue
            print(f"| {r['name']} | {r['params']} | {num(r.get('value'))} | {num(r.get('gbs'))} | "
                  f"{num(r.get('gfs'))} | {num(r.get('frac'), 2)} |")
        print()
    models = [r for r in recs if r["suite"] == "model"]
    if models:
        print("| model | params | value | unit |")
        print("|---|---|---|---|")
        for r in models:
            print(f"| {r['name']} | {r['params']} | {num(r['value'])} | {r['unit']} |")
        print()
    layers = [r for r in recs if r["suite"] == "layer"]
    passes = {}
    for r in layers:
        model = r["name"].split(" · ")[0]
        if r["name"].endswith("· all dispatches"):
            key = (model, re.sub(r" \(\d+ dispatches\)$", "", r["params"]))
            passes.setdefault(key, {"layers": []})["total"] = r["value"]
            passes[key]["dispatches"] = r["params"]
    for r in layers:
        if r["name"].endswith("· all dispatches"):
            continue
        model = r["name"].split(" · ")[0]
        for (m, pp), v in passes.items():
            if m == model and r["params"].startswith(pp + " "):
                count = int(re.search(r"\(x(\d+)\)$", r["params"]).group(1))
                shape = r["params"][len(pp) + 1:].rsplit(" (x", 1)[0]
                v["layers"].append((r["name"].split(" · ")[1], shape, r["value"], count, r.get("frac")))
                break
    for (m, pp), v in passes.items():
        total = v.get("total", 0.0) or 1.0
        top = sorted(v["layers"], key=lambda x: -x[2] * x[3])[: a.top]
        print(f"**{m}, {pp}** — {num(total / 1e3)} ms of GPU time in {v['dispatches'].rsplit('(', 1)[1].rstrip(')')}; "
              f"the {len(top)} most expensive of {len(v['layers'])} distinct layers:\n")
        print("| op | shape | µs each | dispatches | share of the pass | fraction of ceiling |")
        print("|---|---|---|---|---|---|")
        for op, shape, us, count, frac in top:
            print(f"| {op} | {shape} | {num(us)} | {count} | {100 * us * count / total:.1f}% | {num(frac, 2)} |")
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
