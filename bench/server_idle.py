#!/usr/bin/env python3
"""A server at rest, through a real device: what it costs before any client comes, while it
streams to one, just after that client leaves, and once it has let the device go (5 s later).

A private PipeWire session (no sound card needed) with a null sink; the server captures the
sink's monitor through ALSA's pulse plug-in, as in tests/devices.rs. For each phase it prints the
server's CPU (share of one core, from /proc), its threads' wake-ups a second (context switches)
and the capture streams open on the PipeWire session. Figures, not pass/fail.

    python3 bench/server_idle.py [SECONDS]    (each phase measured for SECONDS, default 10)
"""
import os, signal, socket, subprocess, sys, time

import pwsession

seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 10.0
root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
binary = pwsession.echowarp_binary(root)  # $ECHOWARP_BIN, or the release build
HZ = os.sysconf("SC_CLK_TCK")


def switches(pid):
    """Context switches (voluntary and not) summed over a process's live threads (no phase
    measured here sees a thread end)."""
    n = 0
    try:
        for t in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{t}/status") as f:
                n += sum(int(l.split()[1]) for l in f if "ctxt_switches:" in l)
    except OSError:
        pass
    return n


def ticks(pid):
    """CPU time of the whole process (its threads, live and ended), in clock ticks."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def measure(pw, pid, label, span):
    streams = lambda: len([l for l in subprocess.run(
        ["pactl", "list", "short", "source-outputs"], env=pw.env, capture_output=True,
        text=True).stdout.splitlines() if l.strip()])
    cpu0, sw0, t0 = ticks(pid), switches(pid), time.monotonic()
    time.sleep(span)
    span = time.monotonic() - t0
    cpu = (ticks(pid) - cpu0) / HZ / span * 100
    wakes = (switches(pid) - sw0) / span
    print(f"{label:44} {cpu:6.2f} % {wakes:8.0f} /s {streams():16d}")


asoundrc = ('pcm.micA { type pulse device "sinkA.monitor" }\n'
            'pcm.!default { type pulse }\nctl.!default { type pulse }\n')
with pwsession.Session("echowarp-idle-", asoundrc,
                       [["module-null-sink", "sink_name=sinkA", "rate=48000"]]) as pw:
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = str(s.getsockname()[1]); s.close()
    server = pw.spawn([binary, "-d", "micA", "-u", port, "-q"])
    time.sleep(2.0)
    print(f"server on sink A's monitor (ALSA pulse plug-in), {seconds:.0f} s a phase")
    print(f"{'phase':44} {'CPU':>8} {'wake-ups':>11} {'capture streams':>16}")
    measure(pw, server.pid, "no client yet", seconds)
    client = pw.spawn([binary, "-c", "-a", "127.0.0.1", "-u", port, "-d", "null", "-q"])
    time.sleep(2.0)
    measure(pw, server.pid, "streaming to one client", seconds)
    client.send_signal(signal.SIGINT)
    client.wait(timeout=10)
    left = time.monotonic()
    measure(pw, server.pid, "0-4 s after it left (device held)", 4.0)
    time.sleep(max(0.0, 6.0 - (time.monotonic() - left)))
    measure(pw, server.pid, "from 6 s after it left (device let go)", seconds)
