#!/usr/bin/env bash
# Builds EchoWarp for 64-bit Windows on Linux and packages it: a zip (echowarp.exe, README, icon)
# and an MSI made with msitools' wixl from installer/windows/main.wxs. Prints the two paths on
# the last two lines.
#   bash scripts/package-windows.sh [OUTDIR]        (default target/windows)
# ECHOWARP_WINDOWS_EXE=PATH packages an exe built already instead of building one.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-target/windows}
target=x86_64-pc-windows-gnu
need=(mingw-w64 cmake wixl)
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
exe=${ECHOWARP_WINDOWS_EXE:-}
if [ -z "$exe" ]; then
  rustup target list --installed | grep -qx "$target" || rustup target add "$target" >&2
  echo "== release build for $target" >&2
  cargo build --release --locked --target "$target" >&2
  exe=target/$target/release/echowarp.exe
fi
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
mkdir -p "$out"
# wixl takes source paths relative to here only.
mkdir -p target
stage=$(realpath --relative-to=. "$(mktemp -d -p target windows-stage.XXXXXX)")
trap 'rm -rf "$stage"' EXIT
cp "$exe" "$stage/echowarp.exe"
# The exe must stand alone: no mingw runtime DLL beside it (.cargo/config.toml links them in).
if x86_64-w64-mingw32-objdump -p "$stage/echowarp.exe" | grep -i 'DLL Name: lib'; then
  echo "echowarp.exe needs a mingw DLL: see .cargo/config.toml" >&2
  exit 1
fi
zip="$out/echowarp-$version-x86_64-windows.zip"
msi="$out/echowarp-$version-x86_64-windows.msi"
python3 - "$zip" "$stage/echowarp.exe" README.md icons/echowarp.ico <<'PY'
import os, sys, zipfile
with zipfile.ZipFile(sys.argv[1], "w", zipfile.ZIP_DEFLATED) as z:
    for f in sys.argv[2:]:
        z.write(f, "echowarp/" + os.path.basename(f))
PY
wixl -a x64 -D Version="$version" -D CargoTargetBinDir="$stage" -o "$msi" installer/windows/main.wxs
echo "$zip"
echo "$msi"
