#!/usr/bin/env bash
# Builds the Debian package: the release binary, a man page from its --help (help2man), then
# cargo-deb with the assets listed in Cargo.toml. Prints the package's path on the last line.
#   bash scripts/package-deb.sh
set -euo pipefail
cd "$(dirname "$0")/.."
need=(help2man)
missing=()
for p in "${need[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if ! cargo deb --version >/dev/null 2>&1; then
  echo "== installing cargo-deb"
  cargo install cargo-deb --version 3.8.0 --locked --quiet
fi
echo "== release build" >&2
cargo build --release --locked
mkdir -p target/man
help2man --no-info --section 1 \
  --name "stream live audio from one computer to another" \
  --version-string "$(target/release/echowarp --version | awk '{print $2}')" \
  target/release/echowarp > target/man/echowarp.1
gzip -9n -f target/man/echowarp.1
cargo deb --no-build --quiet | tail -n 1
