#!/usr/bin/env bash
# Assembles EchoWarp.app from a built binary (on macOS: cargo build --release first):
#   bash installer/macos/make-bundle.sh [BINARY] [OUT_DIR]
# The bundle's executable starts the menu-bar icon (a desktop is always present on macOS), and
# Info.plist's LSUIElement keeps it out of the Dock. Sign and notarise it before shipping.
set -euo pipefail
cd "$(dirname "$0")/../.."
bin="${1:-target/release/echowarp}"
out="${2:-target/macos}"
[ -x "$bin" ] || { echo "no binary at $bin: build it first (cargo build --release)" >&2; exit 1; }
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
app="$out/EchoWarp.app"
rm -rf "$app"
mkdir -p "$app/Contents/MacOS" "$app/Contents/Resources"
install -m 0755 "$bin" "$app/Contents/MacOS/echowarp"
install -m 0644 icons/echowarp.icns "$app/Contents/Resources/echowarp.icns"
sed "s/@VERSION@/$version/g" installer/macos/Info.plist > "$app/Contents/Info.plist"
printf 'APPL????' > "$app/Contents/PkgInfo"
echo "$app"
