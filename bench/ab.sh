#!/usr/bin/env bash
# Runs one benchmark script with two builds side by side, alternating A, B, A, B... so that both
# meet the same machine load; prints each run's output under its label.
#   bash bench/ab.sh A_BINARY B_BINARY ROUNDS SCRIPT [ARGS...]
#   e.g. bash bench/ab.sh target/previous/echowarp-2d3fe44 target/headless/release/echowarp 3 \
#        bench/stream.py 20
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 4 ]; then
  echo "usage: bash bench/ab.sh A_BINARY B_BINARY ROUNDS SCRIPT [ARGS...]" >&2
  exit 2
fi
a=$(realpath "$1"); b=$(realpath "$2"); rounds=$3; script=$4; shift 4
for bin in "$a" "$b"; do
  [ -x "$bin" ] || { echo "ab: no binary at $bin" >&2; exit 2; }
done
for ((r = 1; r <= rounds; r++)); do
  for label in A B; do
    bin=$a; [ "$label" = B ] && bin=$b
    echo "== round $r, $label ($bin)"
    ECHOWARP_BIN="$bin" python3 "$script" "$@"
  done
done
