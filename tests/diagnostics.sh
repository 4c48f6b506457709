#!/bin/sh
# diagnostics.sh — the malformed-input suite: every BAD_DIR/*.plan.yaml is one case that graft must
# reject with a diagnosed error.
#
#   usage: sh tests/diagnostics.sh GRAFT_BINARY BAD_DIR
#
# A case is a plan file, possibly with a companion model (<case>.model.yaml) or other files it refers
# to (shared ones live in BAD_DIR/data/; the binary IDX fixtures there come from data/generate.sh).
# The comment lines at the top of the plan say what to expect:
#
#   # expect: <text>          one or more; each text must appear somewhere in graft's stderr
#   # command: check|train    optional, default check
#
# The case runs as `GRAFT_BINARY <command> <case>.plan.yaml` from inside BAD_DIR (so the file names in
# messages are relative and stable), stdin from /dev/null, under `timeout 60`. It passes when graft
# exits with status 1 (a diagnosed input error: not 0, not 2 = usage, not 124 = timeout, not >= 128 =
# killed by a signal), its stderr holds every expected text, and its stderr has no sanitizer report and
# no internal error. Prints one line per case, then "N passed, M failed"; exits 1 if any case failed.
# POSIX sh; needs no python.

if [ $# -ne 2 ]; then
  echo "usage: sh $0 GRAFT_BINARY BAD_DIR" >&2
  exit 2
fi

abspath() {
  case $1 in
  /*) printf '%s\n' "$1" ;;
  *) printf '%s/%s\n' "$(pwd)" "$1" ;;
  esac
}
graft=$(abspath "$1")
bad=$(abspath "$2")
if [ ! -x "$graft" ]; then
  echo "diagnostics.sh: $1: not an executable" >&2
  exit 2
fi
if [ ! -d "$bad" ]; then
  echo "diagnostics.sh: $2: not a directory" >&2
  exit 2
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/graft-diag.XXXXXX") || exit 2
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM

if command -v timeout >/dev/null 2>&1; then
  run_timeout="timeout -k 10 60"
else
  run_timeout=""
fi

# No colour, whatever the environment says; stderr is a file anyway.
NO_COLOR=1
export NO_COLOR

passed=0
failed=0

# fail NAME REASON: reports a failed case with its captured stderr.
fail() {
  failed=$((failed + 1))
  echo "FAIL $1: $2"
  if [ -s "$tmp/stderr" ]; then
    echo "  --- stderr ---"
    sed 's/^/  | /' "$tmp/stderr"
    echo "  --------------"
  fi
}

for plan in "$bad"/*.plan.yaml; do
  [ -e "$plan" ] || continue
  file=${plan##*/}
  name=${file%.plan.yaml}
  : >"$tmp/stderr"

  # The expectation block: the comment lines at the top of the file.
  : >"$tmp/expect"
  command=check
  bad_header=""
  while IFS= read -r line || [ -n "$line" ]; do
    case $line in
    "# expect: "*) printf '%s\n' "${line#\# expect: }" >>"$tmp/expect" ;;
    "# command: "*)
      command=${line#\# command: }
      case $command in
      check | train) ;;
      *) bad_header="unknown command '$command' in '# command:' (expected check or train)" ;;
      esac
      ;;
    "#"*) ;;
    *) break ;;
    esac
  done <"$plan"
  if [ -n "$bad_header" ]; then
    fail "$name" "$bad_header"
    continue
  fi
  if [ ! -s "$tmp/expect" ]; then
    fail "$name" "no '# expect: ' line at the top of $file"
    continue
  fi

  (cd "$bad" && exec $run_timeout "$graft" "$command" "$file") </dev/null >"$tmp/stdout" 2>"$tmp/stderr"
  status=$?

  if [ "$status" -ne 1 ]; then
    case $status in
    0) why="graft accepted the input (exit status 0)" ;;
    2) why="exit status 2 (a usage error), expected 1" ;;
    124) why="timed out after 60 s (exit status 124)" ;;
    125 | 126 | 127) why="could not run graft (exit status $status)" ;;
    *)
      if [ "$status" -gt 128 ]; then
        why="killed by signal $((status - 128)) (exit status $status)"
      else
        why="exit status $status, expected 1"
      fi
      ;;
    esac
    fail "$name" "$why"
    continue
  fi

  reason=""
  for bad_word in "Sanitizer" "runtime error" "internal error"; do
    if grep -qF -e "$bad_word" "$tmp/stderr"; then
      reason="stderr contains '$bad_word'"
      break
    fi
  done
  if [ -z "$reason" ]; then
    while IFS= read -r want; do
      if ! grep -qF -e "$want" "$tmp/stderr"; then
        reason="stderr lacks the expected text: $want"
        break
      fi
    done <"$tmp/expect"
  fi
  if [ -n "$reason" ]; then
    fail "$name" "$reason"
    continue
  fi
  passed=$((passed + 1))
  echo "ok   $name"
done

if [ $((passed + failed)) -eq 0 ]; then
  echo "FAIL no cases: $bad has no *.plan.yaml files"
  failed=1
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
