#!/usr/bin/env bash
# EchoWarp's whole test run, as CI runs it: system packages, formatting, lints, every test,
# bounded fuzzing. Works on a fresh Debian/Ubuntu machine with no sound card and no display.
set -euo pipefail
cd "$(dirname "$0")/.."

# Build needs and test infrastructure (testing.md): ALSA headers for cpal (and PipeWire's, with
# libclang for their bindings, and JACK's, for cpal's native hosts), GTK, appindicator and
# D-Bus for the tray; tcpdump to check that no password crosses the wire; PipeWire with null sinks
# reached through ALSA for real devices; Xvfb, trayer, xdotool and ImageMagick to drive the tray,
# dunst to receive its notifications; help2man and desktop-file-utils for the Debian package;
# mingw-w64 and cmake to cross-build the Windows exe, Wine to run it, msitools/wixl for its MSI;
# python3 for the check of the module graph.
packages=(build-essential pkg-config libasound2-dev libopus-dev libasound2-plugins alsa-utils tcpdump
          libpipewire-0.3-dev libclang-dev libjack-jackd2-dev
          libgtk-3-dev libayatana-appindicator3-dev libdbus-1-dev
          dbus pipewire pipewire-pulse wireplumber pulseaudio-utils sox
          xvfb xauth trayer xdotool x11-utils imagemagick dunst
          help2man desktop-file-utils python3
          cmake mingw-w64 wine wine64 msitools wixl)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "== installing: ${missing[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Windows is cross-built with mingw-w64 (the linker and flags are in .cargo/config.toml).
# macOS cannot be built here (no Apple SDK to link with or to compile C against): its Rust, cpal's
# CoreAudio host and the project's macOS branches are type-checked and linted without the C that
# dependencies' build scripts compile (the features notifications off, no-c on; README "Platforms").
windows=x86_64-pc-windows-gnu
macos=aarch64-apple-darwin
for t in "$windows" "$macos"; do
  rustup target list --installed | grep -qx "$t" || rustup target add "$t"
done

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== the shape of src/: no import cycle between modules, no file over 600 lines"
python3 scripts/check-modules.py
echo "== cargo clippy (with the tray, headless, for Windows and for macOS)"
cargo clippy --all-targets --locked --features wine-tests -- -D warnings
cargo clippy --all-targets --locked --no-default-features -- -D warnings
cargo clippy --all-targets --locked --features wine-tests --target "$windows" -- -D warnings
mkdir -p target/no-libopus
LIBOPUS_LIB_DIR="$PWD/target/no-libopus" cargo clippy --all-targets --locked --target "$macos" \
  --no-default-features --features tray,no-c -- -D warnings
echo "== the oldest Rust the crate claims (rust-version in Cargo.toml) builds it"
msrv=$(sed -n 's/^rust-version = "\(.*\)"$/\1/p' Cargo.toml)
rustup toolchain list | grep -q "^$msrv" || rustup toolchain install "$msrv" --profile minimal
cargo +"$msrv" check --locked --all-targets --features wine-tests
echo "== the library's tests and the session harness on a plain machine: an unprivileged user, an"
echo "   empty environment (no root, no sound server, no display)"
lib_tests=$(cargo test --lib --locked --no-run --message-format=json |
  grep '"kind":\["lib"\]' | grep -o '"executable":"[^"]*"' | cut -d'"' -f4 | head -n 1)
plain_dir=$(mktemp -d)
install -m 755 "$lib_tests" "$plain_dir/lib-tests"
chmod 755 "$plain_dir"
plain=(env -i PATH=/usr/bin:/bin HOME="$plain_dir")
if [ "$(id -u)" = 0 ]; then
  plain=(setpriv --reuid=65534 --regid=65534 --clear-groups "${plain[@]}")
  chown 65534 "$plain_dir"
fi
(cd "$plain_dir" && "${plain[@]}" ./lib-tests -q)
rm -rf "$plain_dir"
echo "== the Windows exe (release, $windows)"
cargo build --release --locked --target "$windows"
export ECHOWARP_WINDOWS_EXE="$PWD/target/$windows/release/echowarp.exe"
echo "== the Linux binary (release: the hostile-peer tests attack it; the .deb packages it)"
cargo build --release --locked
export ECHOWARP_RELEASE_BIN="$PWD/target/release/echowarp"
echo "== an earlier build (tests/compat.rs streams between it and today's, both ways)"
ECHOWARP_PREVIOUS_BIN=$(bash scripts/build-previous.sh)
export ECHOWARP_PREVIOUS_BIN
echo "== cargo test (tests/windows.rs runs that exe under Wine)"
# pipefail makes a failing test fail the script even through tee.
cargo test --locked --all-targets --features wine-tests 2>&1 | tee /tmp/echowarp-test.log
echo "== packaging (.deb built, installed with dpkg, run, removed; macOS and WiX recipes)"
bash scripts/test-packages.sh 2>&1 | tee /tmp/echowarp-packaging.log
if [ -x scripts/fuzz.sh ]; then
  echo "== fuzzing (bounded)"
  bash scripts/fuzz.sh "${FUZZ_SECONDS:-20}"
fi
passed=$(grep -Eo '^test result: ok\. [0-9]+ passed' /tmp/echowarp-test.log | awk '{s+=$4} END {print s+0}')
packaged=$(sed -n 's/^packaging: \([0-9]*\) passed$/\1/p' /tmp/echowarp-packaging.log)
echo "== all tests passed"
echo "tests: $((passed + packaged)) passed, 0 failed (cargo test ${passed}, packaging ${packaged})"
