#!/usr/bin/env bash
# Packaging checks (issue 3): builds the Debian package, installs it with dpkg, runs what it
# installed, removes it; assembles the macOS bundle and checks the installer recipes.
# Prints "packaging: N passed" on success; the first failed check stops it with its output.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
passed=0
check() {  # check "what" command...
  local what=$1; shift
  local out
  if out=$("$@" 2>&1); then
    passed=$((passed + 1)); echo "ok: $what"
  else
    echo "FAILED: $what"; echo "$out"; exit 1
  fi
}

deb=$(bash scripts/package-deb.sh | tail -n 1)
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
check "the package names its dependencies" \
  bash -c "dpkg-deb -f '$deb' Depends | grep -q libasound2 && dpkg-deb -f '$deb' Depends | grep -q appindicator"
$SUDO dpkg -r echowarp >/dev/null 2>&1 || true
check "dpkg installs $deb" $SUDO dpkg -i "$deb"
check "the installed echowarp --version runs" \
  bash -c "[ \"\$(/usr/bin/echowarp --version)\" = 'echowarp $version' ]"
check "the desktop entry is valid and starts the tray" \
  bash -c "desktop-file-validate /usr/share/applications/echowarp.desktop && grep -qx 'Exec=echowarp --tray' /usr/share/applications/echowarp.desktop"
check "theme icons are installed" \
  test -s /usr/share/icons/hicolor/256x256/apps/echowarp.png -a -s /usr/share/icons/hicolor/48x48/apps/echowarp.png
check "the man page has options, files and examples" \
  bash -c "zcat /usr/share/man/man1/echowarp.1.gz | grep -qF 'server\\-address' && zcat /usr/share/man/man1/echowarp.1.gz | grep -q '^.SH FILES' && zcat /usr/share/man/man1/echowarp.1.gz | grep -q '^.SH EXAMPLES'"
check "without a desktop, --tray says so and exits 2" \
  bash -c "out=\$(env -u DISPLAY -u WAYLAND_DISPLAY /usr/bin/echowarp --tray 2>&1); [ \$? = 2 ] && grep -q 'no desktop session' <<<\"\$out\""
check "dpkg removes it" bash -c "$SUDO dpkg -r echowarp >/dev/null && [ ! -e /usr/bin/echowarp ]"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
check "the macOS bundle assembles" bash installer/macos/make-bundle.sh target/release/echowarp "$tmp"
check "its Info.plist parses, hides the Dock icon and asks for the microphone" python3 - "$tmp/EchoWarp.app/Contents/Info.plist" "$version" <<'PY'
import plistlib, sys
d = plistlib.load(open(sys.argv[1], "rb"))
assert d["LSUIElement"] is True, d
assert d["CFBundleShortVersionString"] == sys.argv[2], d
assert d["CFBundleExecutable"] == "echowarp" and d["NSMicrophoneUsageDescription"], d
PY
check "the WiX source is well-formed and its files exist" python3 - installer/windows/main.wxs <<'PY'
import os, sys, xml.etree.ElementTree as ET
ns = {"w": "http://schemas.microsoft.com/wix/2006/wi"}
root = ET.parse(sys.argv[1]).getroot()
sources = [e.get("SourceFile") or e.get("Source") for e in root.iter() if e.get("SourceFile") or e.get("Source")]
local = [s.replace("\\", "/") for s in sources if "$(" not in s]
assert local and all(os.path.exists(s) for s in local), local
shortcut = root.find(".//w:Shortcut", ns)
assert shortcut is not None and shortcut.get("Arguments") == "--tray", shortcut
PY
echo "packaging: $passed passed"
