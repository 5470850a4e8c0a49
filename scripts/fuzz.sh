#!/usr/bin/env bash
# Runs every fuzz target for a bounded time (default 20 s each) from the committed seed corpus.
# cargo-fuzz needs nightly flags; RUSTC_BOOTSTRAP lets the stable toolchain accept them.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-20}"
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install cargo-fuzz --locked --quiet
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for target in ident frame datagram handshake; do
  mkdir -p "$work/$target"
  cp fuzz/corpus/"$target"/* "$work/$target/"
  echo "== fuzz $target for ${seconds}s"
  status=0
  RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir fuzz "$target" "$work/$target" -- \
    -max_total_time="$seconds" -max_len=4096 -print_final_stats=1 >"$work/$target.log" 2>&1 || status=$?
  grep -E "^(stat::number_of_executed_units|stat::new_units_added|==|INFO: Done)|ERROR|panicked" "$work/$target.log" || true
  # A crash leaves an artifact and a non-zero status.
  if ls fuzz/artifacts/"$target"/crash-* >/dev/null 2>&1; then
    echo "fuzz target $target crashed: see fuzz/artifacts/$target" >&2
    exit 1
  fi
  # Any other failure (the target did not build, libFuzzer refused its flags) fails too.
  if [ "$status" != 0 ]; then
    tail -n 30 "$work/$target.log" >&2
    echo "fuzz target $target failed (exit $status) without a crash artifact" >&2
    exit 1
  fi
done
