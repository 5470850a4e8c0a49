#!/usr/bin/env bash
# The tray at rest: RSS and CPU of `echowarp --tray` over an idle window, under Xvfb + trayer +
# a private D-Bus session (as the tests run it). "Idle" means no wake-ups when nothing happens:
# the figures count every thread's context switches.
#   bash bench/tray_idle.sh [SECONDS] [stopped|streaming]
# `streaming` runs a server on a silent `null` source with no client (the engine's own timers).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-20}
mode=${2:-stopped}
cargo build --release --locked --quiet
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
export XDG_CONFIG_HOME="$work/config" XDG_DATA_HOME="$work/data" HOME="$work" NO_AT_BRIDGE=1
mkdir -p "$XDG_CONFIG_HOME/echowarp"
start=false; [ "$mode" = streaming ] && start=true
printf 'device = "null"\nstart_streaming = %s\nport = 46415\n' "$start" > "$XDG_CONFIG_HOME/echowarp/profile.toml"
display=":$((300 + RANDOM % 200))"
Xvfb "$display" -screen 0 800x600x24 -nolisten tcp >/dev/null 2>&1 & pids+=($!)
export DISPLAY=$display
for _ in $(seq 50); do xdpyinfo >/dev/null 2>&1 && break; sleep 0.1; done
eval "$(dbus-launch --sh-syntax)"; pids+=("$DBUS_SESSION_BUS_PID")
trayer --edge top --align right --widthtype request --height 32 --SetDockType true >/dev/null 2>&1 & pids+=($!)
sleep 1
target/release/echowarp --tray >"$work/tray.log" 2>&1 & tray=$!; pids+=($tray)
for _ in $(seq 100); do grep -q "tray ready" "$work/tray.log" && break; sleep 0.1; done
sleep 3  # let start-up settle
switches() { local t=0 x; for s in /proc/"$tray"/task/*/status; do
  x=$(awk '/^voluntary_ctxt/{v=$2} /^nonvoluntary_ctxt/{n=$2} END{print v+n}' "$s"); t=$((t + x)); done; echo "$t"; }
ticks() { awk '{print $14 + $15}' /proc/"$tray"/stat; }
t1=$(ticks); c1=$(switches)
sleep "$secs"
t2=$(ticks); c2=$(switches)
hz=$(getconf CLK_TCK)
echo "tray ($mode), idle ${secs} s: CPU $(( (t2 - t1) * 1000 / hz )) ms ($(awk -v t=$((t2 - t1)) -v h="$hz" -v s="$secs" 'BEGIN{printf "%.2f", 100*t/h/s}') % of a core), context switches $((c2 - c1)) (all threads)"
echo "tray ($mode): $(grep -E '^VmRSS' /proc/$tray/status | tr -s ' '), $(grep -E '^RssAnon' /proc/$tray/status | tr -s ' '), $(grep -E '^RssFile' /proc/$tray/status | tr -s ' '), $(grep -E '^VmHWM' /proc/$tray/status | tr -s ' '), threads $(ls /proc/$tray/task | wc -l)"
