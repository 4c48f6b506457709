#!/bin/sh
# Golden IR tests. Each GOLDEN_DIR/*.plan.yaml has a line `# RUN: graft ARGS` (the plan's path is
# appended) and `# CHECK: text` lines that must match, in order, substrings of successive output lines;
# `# CHECK-NOT: text` must not occur between the previous CHECK's line and the next CHECK's line (or
# the end). Runs from GOLDEN_DIR so paths are stable. usage: golden.sh GRAFT GOLDEN_DIR
set -u
graft=$1
cd "$2" || exit 1
pass=0
failed=0
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
for plan in *.plan.yaml; do
  args=$(sed -n 's/^# RUN: graft //p' "$plan")
  # shellcheck disable=SC2086
  if ! "$graft" $args "$plan" > "$tmp" 2>&1; then
    echo "FAIL $plan: graft $args exited with $?"; cat "$tmp"; failed=$((failed + 1)); continue
  fi
  if msg=$(grep -E '^# CHECK(-NOT)?: ' "$plan" | awk -v out="$tmp" '
    BEGIN { n = 0; while ((getline l < out) > 0) lines[++n] = l; pos = 0; nots = 0 }
    /^# CHECK-NOT: / { nots++; notpat[nots] = substr($0, 14); next }
    /^# CHECK: / {
      pat = substr($0, 10); found = 0
      for (i = pos + 1; i <= n; i++) if (index(lines[i], pat)) { found = i; break }
      if (!found) { print "CHECK not found after line " pos ": " pat; exit 1 }
      for (k = 1; k <= nots; k++) for (j = pos + 1; j < found; j++)
        if (index(lines[j], notpat[k])) { print "CHECK-NOT matched line " j ": " notpat[k]; exit 1 }
      nots = 0; pos = found
    }
    END { if (nots) for (k = 1; k <= nots; k++) for (j = pos + 1; j <= n; j++)
            if (index(lines[j], notpat[k])) { print "CHECK-NOT matched line " j ": " notpat[k]; exit 1 } }'); then
    echo "ok   $plan"; pass=$((pass + 1))
  else
    echo "FAIL $plan: $msg"; echo "--- output:"; cat "$tmp"; failed=$((failed + 1))
  fi
done
echo "$pass passed, $failed failed"
[ "$failed" -eq 0 ]
