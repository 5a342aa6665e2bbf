#!/usr/bin/env bash
# Interleaved A/B of JAX workloads between two commits (is a refactor free?), order alternating per round.
#   benchmarks/ab_commits.sh BEFORE AFTER [ROUNDS] [FILTER]
# Each commit is checked out in a temporary worktree and run with this checkout's Python environment; prints
# a Markdown table of per-commit medians and the after/before ratio per round (median and range).
set -euo pipefail
before=${1:?usage: ab_commits.sh BEFORE AFTER [ROUNDS] [FILTER]}
after=${2:?usage: ab_commits.sh BEFORE AFTER [ROUNDS] [FILTER]}
rounds=${3:-4}
filter=${4:-'^(dann_step_b64x2|dcgan_step_b128|vgg16_infer_b8|saliency_squeezenet1_1_b5)$'}
py=${PYTHON:-python}
repo=$(git rev-parse --show-toplevel)
work=$(mktemp -d)
trap 'git -C "$repo" worktree remove --force "$work/before" 2>/dev/null; git -C "$repo" worktree remove --force "$work/after" 2>/dev/null; rm -rf "$work"' EXIT
git -C "$repo" worktree add -q --detach "$work/before" "$before"
git -C "$repo" worktree add -q --detach "$work/after" "$after"
for r in $(seq 1 "$rounds"); do
  if [ $((r % 2)) -eq 1 ]; then order="before after"; else order="after before"; fi
  for t in $order; do
    (cd "$work/$t" && PYTHONPATH="$work/$t" "$py" -m benchmarks.harness run --frameworks jax --filter "$filter" \
       --no-write --repeats 5 --seconds 3 --json-out "$work/${t}_r$r.json" > "$work/${t}_r$r.log" 2>&1)
    echo "round $r $t done $(date +%T)" >&2
  done
done
"$py" - "$work" <<'PY'
import glob, json, statistics, sys
rows = {}
for f in sorted(glob.glob(f"{sys.argv[1]}/*_r*.json")):
    which = f.rsplit("/", 1)[-1].split("_r")[0]
    for r in json.load(open(f)):
        if r.get("jax") and "median_s" in r["jax"]:
            rows.setdefault(r["name"], {}).setdefault(which, []).append(r["jax"]["median_s"])
print("| workload | before median ms | after median ms | after / before, median of rounds (range) |")
print("| --- | --- | --- | --- |")
for name, d in rows.items():
    b, a = d.get("before", []), d.get("after", [])
    ratios = [y / x for x, y in zip(b, a)]
    print(f"| {name} | {1e3 * statistics.median(b):.1f} | {1e3 * statistics.median(a):.1f} | "
          f"{statistics.median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f}) |")
PY
