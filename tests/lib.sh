# lib.sh — sourced by the shell tests that train (`. "$(dirname "$0")/lib.sh"`, with the graft
# binary as $1): sets graft, examples (the repository's examples/), fm (Debian's Fashion-MNIST),
# makes a fresh working directory $dir (removed on exit), and gives ok/bad reporting: bad sets
# fail=1 and shows the log file it is given.
graft=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
examples=$(cd "$(dirname "$0")/../examples" && pwd)
fm=/usr/share/datasets/fashion-mnist
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
fail=0
ok() { echo "ok   $1"; }
bad() {
  echo "FAIL $1"
  [ -n "${2:-}" ] && sed 's/^/  | /' "$2" | cut -c1-240
  fail=1
}
# plan_head MODEL DATA_KEY...: the start of a plan training MODEL on Fashion-MNIST's training set,
# each DATA_KEY ("per_class: 100", "classes: [5, 6]") a line of its data section; the loss is
# cross-entropy. The rest of the plan (optimizer, batch size, ...) follows.
plan_head() {
  printf 'model: %s\ndata:\n  train: {images: %s, labels: %s}\n' "$1" "$fm/train-images-idx3-ubyte.gz" "$fm/train-labels-idx1-ubyte.gz"
  shift
  for key in "$@"; do printf '  %s\n' "$key"; done
  printf 'loss: cross_entropy\n'
}
