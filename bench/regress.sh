#!/usr/bin/env bash
# Regression check between two commits, measured in one run on this machine:
#   bench/regress.sh OLD [NEW] [-- extra `spikescan bench` arguments]
# builds `spikescan` at both commits (git worktrees under $TMPDIR; NEW defaults to the working
# tree), runs the same benchmarks with each binary in alternating rounds (old, new, old, new, …,
# so drift of a shared machine lands on both), keeps the best of the rounds per record, and
# prints tools/compare.py --regress: every record more than 20% slower is flagged, and the
# exit status is 1 when one is. The default benchmarks are the --quick kernels and the
# LMUFormer models (minutes on lavapipe); pass others after `--`, using flags both commits
# know. Outputs: bench/out/regress-{old,new}.jsonl and bench/out/regress.md.
set -euo pipefail
cd "$(dirname "$0")/.."
old=${1:?usage: bench/regress.sh OLD [NEW] [-- bench args]}
shift
new=""
if [ $# -gt 0 ] && [ "$1" != "--" ]; then new=$1; shift; fi
[ "${1:-}" = "--" ] && shift
args=("$@")
if [ ${#args[@]} -eq 0 ]; then
  args=(--kernels --quick --reps 5 --lmuformer lmuformer-gsc --lmuformer spiking-lmuformer-gsc
        --clip-batch 1 --frames 16)
fi
rounds=${ROUNDS:-2}
work=$(mktemp -d)
trap 'git worktree remove --force "$work/old" >/dev/null 2>&1 || true;
      git worktree remove --force "$work/new" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
mkdir -p bench/out
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
# The shared target directory: dependencies are built once; each checkout builds its own crates.
tdir="$PWD/target"
build() { # build <commit, or "" for the working tree> <name>: the binary at $work/bin-<name>
  local src=.
  if [ -n "$1" ]; then
    git worktree add --detach "$work/$2" "$1" >/dev/null
    src="$work/$2"
  fi
  (cd "$src" && cargo build --release -q -p spikescan-cli --target-dir "$tdir")
  cp "$tdir/release/spikescan" "$work/bin-$2"
}
echo "building $old and ${new:-the working tree}" >&2
build "$old" old
build "$new" new
: > bench/out/regress-old.jsonl
: > bench/out/regress-new.jsonl
for r in $(seq "$rounds"); do
  for side in old new; do
    echo "round $r: $side" >&2
    "$work/bin-$side" --quiet bench "${args[@]}" --out "$work/$side-$r.jsonl" >/dev/null
    cat "$work/$side-$r.jsonl" >> "bench/out/regress-$side.jsonl"
  done
done
python3 tools/compare.py bench/out/regress-old.jsonl bench/out/regress-new.jsonl --regress --markdown \
  | tee bench/out/regress.md
