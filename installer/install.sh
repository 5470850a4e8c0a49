#!/usr/bin/env bash
# Installs EchoWarp on Debian/Ubuntu and starts it: builds the release binary, puts it on PATH,
# then runs it on defaults (a server capturing the default input, or the saved profile).
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
need=(build-essential pkg-config libasound2-dev libopus-dev libasound2-plugins
      libpipewire-0.3-dev libclang-dev libjack-jackd2-dev
      libgtk-3-dev libayatana-appindicator3-dev libdbus-1-dev pulseaudio-utils)
missing=()
for p in "${need[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
if ! command -v cargo >/dev/null; then
  echo "EchoWarp builds with Rust: install a current toolchain with rustup, then run this again." >&2
  exit 1
fi
cargo build --release --locked
if [ "$(id -u)" = 0 ]; then prefix=/usr/local; else prefix="$HOME/.local"; fi
dest="$prefix/bin"
mkdir -p "$dest" "$prefix/share/applications"
install -m 0755 target/release/echowarp "$dest/echowarp"
# The application menu entry and its icon (the .deb from scripts/package-deb.sh does the same
# under /usr). The entry names the full path, quoted, so it works without PATH changes.
sed "s|^Exec=echowarp |Exec=\"$dest/echowarp\" |" installer/linux/echowarp.desktop \
  > "$prefix/share/applications/echowarp.desktop"
for size in 48 128 256; do
  install -D -m 0644 "icons/echowarp-$size.png" \
    "$prefix/share/icons/hicolor/${size}x${size}/apps/echowarp.png"
done
echo "installed $dest/echowarp, with a menu entry and icons under $prefix/share"
case ":$PATH:" in *":$dest:"*) ;; *) echo "note: add $dest to your PATH" ;; esac
if [ -n "${DISPLAY:-}${WAYLAND_DISPLAY:-}" ]; then
  echo "starting EchoWarp in the system tray"
  nohup "$dest/echowarp" --tray >/dev/null 2>&1 &
  echo "EchoWarp is in your tray (its menu starts, stops and configures it)"
elif [ -t 0 ]; then
  echo "no desktop session: interactive setup, then EchoWarp runs headless (Ctrl-C stops it)"
  exec "$dest/echowarp" -I
else
  echo "no desktop session: running headless from the saved profile (Ctrl-C stops it)"
  exec "$dest/echowarp"
fi
