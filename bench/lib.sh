# lib.sh — shared by the bench/ scripts (sourced from the repository root): checks and a median.
# needs_graft_and_torch: stop unless build/graft exists and Debian's python3-torch imports.
needs_graft_and_torch() {
  [ -x build/graft ] || { echo "build graft first (make)"; exit 1; }
  /usr/bin/python3 -c "import torch" 2>/dev/null || { echo "needs python3-torch: apt-get install python3-torch"; exit 1; }
}
# median: of the numbers on standard input, one per line.
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
