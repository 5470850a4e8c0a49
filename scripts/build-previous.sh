#!/usr/bin/env bash
# Builds the headless release binary of an earlier commit (default: the last one before the
# session redesign of issue 18), the build today's must stay wire-compatible with, in a target
# folder of its own; prints the binary's path on stdout. tests/compat.rs runs it against today's.
set -euo pipefail
cd "$(dirname "$0")/.."
ref="${ECHOWARP_PREVIOUS_REF:-2d3fe44}"
root="$PWD/target/previous"
out="$root/echowarp-$ref"
if [ ! -x "$out" ]; then
  if ! git cat-file -e "$ref^{commit}" 2>/dev/null; then
    echo "build-previous: commit $ref is not in this clone (a shallow clone? fetch its history)" >&2
    exit 1
  fi
  src="$root/src-$ref"
  rm -rf "$src"
  mkdir -p "$src"
  git archive "$ref" | tar -x -C "$src"
  echo "== building $ref (headless, release) for the compatibility test" >&2
  cargo build --release --locked --no-default-features --quiet \
    --manifest-path "$src/Cargo.toml" --target-dir "$root/build" >&2
  cp "$root/build/release/echowarp" "$out.tmp"
  mv "$out.tmp" "$out"
fi
echo "$out"
