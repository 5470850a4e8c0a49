#!/usr/bin/env bash
# The server's limits under attack from many addresses (benches/attack.rs): idle and trickling
# connections, guessing from rotating addresses, failures from 10,000 addresses. Prints figures.
#   bash bench/attack.sh                      (the release build of this tree)
#   ECHOWARP_BIN=/path/to/echowarp bash bench/attack.sh
#   bash bench/attack.sh guessing             (only some parts: slots, guessing, addresses)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${ECHOWARP_BIN:-}" ]; then
  cargo build --release --locked --quiet
  export ECHOWARP_BIN="$PWD/target/release/echowarp"
fi
exec cargo bench --locked --bench attack -- "$@"
