#!/bin/sh
# The domain-adaptation recipe (DANN, Ganin & Lempitsky 2015), MNIST -> MNIST-M: source only
# (source.yaml), DANN (dann.yaml) and train on target (target.yaml), each for several seeds, in graft
# and — with --torch — in the PyTorch reference (tests/torch/dann.py: the same network, data,
# batches and schedules; PyTorch is a test oracle here, never part of graft). Prints a table of
# MNIST-M test accuracy (mean ± sd over the seeds) next to the paper's; with --write, also puts it in
# examples/domain/README.md between its "results" markers. The data comes from
# scripts/get-domain-data.sh (run here if missing).
# usage: examples/domain/run.sh [--torch] [--write] [--check] [--seeds 1,2,3] [--epochs E] [--threads T] [BUILD]
#   --torch   also the PyTorch reference, at the same time as graft (each with T threads; default 1)
#   --check   exit 1 unless graft's DANN beats its source-only run by >= 10 points on average
set -eu
torch=0 write=0 check=0 seeds=1,2,3 epochs= threads=1
while [ $# -gt 0 ]; do
  case $1 in
  --torch) torch=1 ;;
  --write) write=1 ;;
  --check) check=1 ;;
  --seeds) seeds=$2; shift ;;
  --epochs) epochs=$2; shift ;;
  --threads) threads=$2; shift ;;
  *) break ;;
  esac
  shift
done
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=$(cd "${1:-$root/build}" && pwd)
MNISTM=$build/mnistm sh "$root/scripts/get-domain-data.sh" "$here/data"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
results=$work/results # lines: framework mode seed target_acc source_acc domain_acc seconds
: > "$results"
now() { date +%s.%N; }
if [ $torch = 1 ]; then # in the background, on the other core
  /usr/bin/python3 "$root/tests/torch/dann.py" --data "$here/data" --seeds "$seeds" --threads "$threads" ${epochs:+--epochs "$epochs"} \
    2> "$work/torch.err" | /usr/bin/python3 -c '
import json, sys
for l in sys.stdin:
    r = json.loads(l)
    f = lambda v: "-" if v is None else "%.4f" % v
    print("torch", r["mode"], r["seed"], f(r["target_acc"]), f(r["source_acc"] if r["mode"] == "dann" else None), f(r["domain_acc"]),
          "%.1f" % r["seconds"], flush=True)
' > "$work/torch.res" &
  torch_pid=$!
fi
for mode in source dann target; do
  for seed in $(echo "$seeds" | tr , ' '); do
    t0=$(now)
    "$build/graft" train "$here/$mode.yaml" -q --seed "$seed" --threads "$threads" ${epochs:+--epochs "$epochs"} > "$work/log" 2>&1 ||
      { cat "$work/log"; exit 1; }
    secs=$(awk -v a="$(now)" -v b="$t0" 'BEGIN { printf "%.1f", a - b }')
    if [ $mode = dann ]; then # dann's test set is MNIST's; its target test set MNIST-M's
      tgt=$(sed -n 's/^final target test accuracy: //p' "$work/log")
      src=$(sed -n 's/^final test accuracy: //p' "$work/log")
      dom=$(sed -n 's/^final domain accuracy: //p' "$work/log")
    else
      tgt=$(sed -n 's/^final test accuracy: //p' "$work/log")
      src=- dom=-
    fi
    echo "graft $mode $seed $tgt $src $dom $secs" | tee -a "$results"
  done
done
if [ $torch = 1 ]; then
  wait $torch_pid || { cat "$work/torch.err"; exit 1; }
  cat "$work/torch.res" | tee -a "$results"
fi
table=$work/table.md
awk -v seeds="$seeds" '
function stat(k,   i, m, s) { m = 0; for (i = 1; i <= n[k]; i++) m += v[k, i]; m /= n[k]
  s = 0; for (i = 1; i <= n[k]; i++) s += (v[k, i] - m) ^ 2; s = n[k] > 1 ? sqrt(s / (n[k] - 1)) : 0
  return sprintf("%.4f ± %.4f", m, s) }
function mean(k,   i, m) { m = 0; for (i = 1; i <= n[k]; i++) m += v[k, i]; return m / n[k] }
{ k = $1 " " $2; v[k, ++n[k]] = $4; t[k] += $7; if ($2 == "dann") { d[$1, n[k]] = $6 } }
END {
  paper["source"] = ".5225"; paper["dann"] = ".7666"; paper["target"] = ".9596"
  name["source"] = "source only"; name["dann"] = "DANN"; name["target"] = "train on target"
  hasT = n["torch source"] > 0
  printf "| MNIST → MNIST-M, test accuracy on MNIST-M | graft | %sGanin & Lempitsky (2015) |\n", hasT ? "PyTorch reference | " : ""
  printf "|---|---|%s---|\n", hasT ? "---|" : ""
  split("source dann target", modes, " ")
  for (i = 1; i <= 3; i++) { m = modes[i]
    printf "| %s | %s | %s%s |\n", name[m], stat("graft " m), hasT ? stat("torch " m) " | " : "", paper[m] }
  printf "| DANN − source only | %+.4f | %s+.2441 |\n", mean("graft dann") - mean("graft source"),
    hasT ? sprintf("%+.4f | ", mean("torch dann") - mean("torch source")) : ""
  printf "\nSeeds %s; mean ± sample sd. Seconds per run (mean): graft", seeds
  for (i = 1; i <= 3; i++) printf " %s %.0f", modes[i], t["graft " modes[i]] / n["graft " modes[i]]
  if (hasT) { printf "; PyTorch"; for (i = 1; i <= 3; i++) printf " %s %.0f", modes[i], t["torch " modes[i]] / n["torch " modes[i]] }
  printf ".\n"
}' "$results" > "$table"
echo
cat "$table"
if [ $write = 1 ]; then
  readme=$here/README.md
  awk -v table="$table" '
    /<!-- results: begin -->/ { print; while ((getline l < table) > 0) print l; skip = 1; next }
    /<!-- results: end -->/ { skip = 0 }
    !skip' "$readme" > "$work/readme" && cp "$work/readme" "$readme"
  echo "written to $readme"
fi
if [ $check = 1 ]; then
  awk '$1 == "graft" && $2 == "source" { s += $4; ns++ } $1 == "graft" && $2 == "dann" { d += $4; nd++ }
    END { gap = d / nd - s / ns; ok = gap >= 0.10
      printf "check: DANN %.4f vs source only %.4f on MNIST-M: %+.4f, %s\n", d / nd, s / ns, gap, ok ? "ok" : "FAILED"; exit !ok }' "$results"
fi
