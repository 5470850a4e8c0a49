#!/usr/bin/env python3
"""Added latency from the server's capture to the client's playback, through real devices:
a private PipeWire session (no sound card needed) with null sinks A and B, reached by EchoWarp
through ALSA's pulse plugin as in tests/devices.rs.

A click train is played into a combine sink that feeds both A and B at the same instant. The
server captures A's monitor, the client plays into B, and B's monitor is recorded: each click
appears there twice, first as played directly, then as carried by EchoWarp. The gap between the
two is the added latency (capture, network, jitter buffer, playback). Prints the median and the
spread per preset; figures, not pass/fail.

    python3 bench/latency.py [SECONDS] [--route pulse|pipewire|native|pulse-native] [--only TEXT]
                             [--series] [--threads]
                             [--stalls MS,MS,...]
    (default 20 s: 40 clicks per preset; --only runs the presets whose name holds TEXT;
    --series prints the client's figures for every second: depth, target, late, lost, packets
    trimmed, drift;
    --threads prints each side's CPU and wake-ups a second, thread by thread;
    --stalls freezes the PipeWire daemon that long, evenly spaced while the clicks play: every
    device stalls at once, as on a machine too busy for its audio server)

The last preset is a yardstick, not EchoWarp: trx (Opus over RTP, `apt-get install trx`; skipped
when missing) with its defaults, which are EchoWarp's 20 ms Opus preset's settings, through the
same devices, clicks and CPU figures.

Clicks start 12 s after the client connects: the figures are a running session's, not its first
seconds' (the jitter buffer starts sized on the devices' start-up and shrinks after 10 s calm).

--route picks the ALSA plug-in EchoWarp (and the reference pipe) reach the sinks through:
"pulse" (libasound2-plugins, through pipewire-pulse; the default, as in tests/devices.rs) or
"pipewire" (pipewire-alsa, PipeWire's own ALSA plug-in; capture of sink A's monitor is asked
for with PIPEWIRE_PROPS stream.capture.sink).
"native" and "pulse-native" take no plug-in: EchoWarp talks to PipeWire with its own API
(--audio-host pipewire: the server captures sink A, which records what it plays) or speaks the
PulseAudio protocol to pipewire-pulse (--audio-host pulse: sinkA.monitor); the reference pipe
and trx, which have no such host, go through the pulse plug-in as in the default route.
"""
import os, signal, socket, struct, subprocess, sys, time

import pwsession
import yardsticks

args = sys.argv[1:]
route = "pulse"
if "--route" in args:
    i = args.index("--route")
    route = args[i + 1]
    del args[i:i + 2]
series = "--series" in args
if series:
    args.remove("--series")
per_thread = "--threads" in args
if per_thread:
    args.remove("--threads")
stalls = []
if "--stalls" in args:
    i = args.index("--stalls")
    stalls = [int(v) for v in args[i + 1].split(",")]
    del args[i:i + 2]
only = None
if "--only" in args:
    i = args.index("--only")
    only = args[i + 1]
    del args[i:i + 2]
if route not in ("pulse", "pipewire", "native", "pulse-native"):
    sys.exit("--route: pulse, pipewire, native or pulse-native")
# EchoWarp's device flags per route: (server, client).
DEVICES = {
    "pulse": (["--audio-host", "alsa", "-d", "micA"], ["--audio-host", "alsa", "-d", "speakerB"]),
    "pipewire": (["--audio-host", "alsa", "-d", "micA"], ["--audio-host", "alsa", "-d", "speakerB"]),
    "native": (["--audio-host", "pipewire", "-o", "-d", "sinkA"], ["--audio-host", "pipewire", "-d", "sinkB"]),
    "pulse-native": (["--audio-host", "pulse", "-o", "-d", "sinkA"], ["--audio-host", "pulse", "-d", "sinkB"]),
}[route]
seconds = int(args[0]) if args else 20
settle = 12.0
if route == "pipewire":
    import glob
    if not glob.glob("/usr/lib/*/alsa-lib/libasound_module_pcm_pipewire.so"):
        sys.exit("--route pipewire needs PipeWire's ALSA plug-in: sudo apt-get install pipewire-alsa")
root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
binary = pwsession.echowarp_binary(root)  # $ECHOWARP_BIN, or the release build
RATE = 48000
PRESETS = {
    # name: (profile [audio] lines, extra server flags); None: the reference pipe, no EchoWarp
    "reference: arecord | aplay, 10 ms buffers": None,
    # The floor of the table: PulseAudio's own tools, no ALSA plug-in, 5 ms asked for.
    "floor: parec | pacat, 5 ms latency": "floor",
    "default (5 ms packets, 10 ms buffer floor)": ("", []),
    # frame_ms = 2: PCM packets of 2 ms (96 frames at 48 kHz); the devices run 2.5 ms periods.
    "low latency (2 ms packets, 3 ms floor)": ("frame_ms = 2\ntarget_latency_ms = 3\n", []),
    "opus 128 kb/s (5 ms frames)": ("", ["--codec", "opus"]),
    # The least CPU: a packet every 20 ms, CELT alone (2.5 ms of look-ahead).
    "opus 128 kb/s (20 ms frames, no FEC)": ("frame_ms = 20\nfec = false\n", ["--codec", "opus"]),
    # A yardstick through the same devices: trx (Opus over RTP; its defaults are the preset
    # above's: 48 kHz stereo, 20 ms frames, 128 kb/s), trx-tx on sink A, trx-rx into sink B.
    "trx 0.5 (opus 128 kb/s, 20 ms frames)": "trx",
    # The Python original, from PyPI: PCM in 5.8 ms packets (256 frames), no jitter buffer to
    # speak of; through the ALSA pulse plug-in whatever the route (it has no other).
    "EchoWarp 0.4 (Python, PCM)": "echowarp-0.4",
}

if route != "pipewire":
    asoundrc = ('pcm.micA { type pulse device "sinkA.monitor" }\n'
                'pcm.speakerB { type pulse device "sinkB" }\n')
else:
    asoundrc = ('pcm.micA { type pipewire capture_node "sinkA" }\n'
                'pcm.speakerB { type pipewire playback_node "sinkB" }\n')
asoundrc += 'pcm.!default { type pulse }\nctl.!default { type pulse }\n'
session = pwsession.Session("echowarp-latency-", asoundrc, [
    ["module-null-sink", "sink_name=sinkA", f"rate={RATE}"],
    ["module-null-sink", "sink_name=sinkB", f"rate={RATE}"],
    ["module-combine-sink", "sink_name=both", "slaves=sinkA,sinkB", f"rate={RATE}"],
])
work, env, spawn = session.work, session.env, session.spawn
# What the capturing side needs to reach a sink's monitor through PipeWire's own plug-in.
capture_env = dict(env, PIPEWIRE_PROPS="{ stream.capture.sink = true }") if route == "pipewire" else env

try:
    # Clicks: 1 ms bursts every 500 ms, left channel only.
    clicks = bytearray()
    period = RATE // 2
    for i in range(seconds * 2):
        for n in range(period):
            v = 20000 if n < 48 else 0
            clicks += struct.pack("<hh", v, 0)
    click_file = os.path.join(work, "clicks.raw")
    with open(click_file, "wb") as f:
        f.write(clicks)

    print(f"added latency, server capture (sink A) to client playback (sink B), {seconds * 2} clicks per preset, "
          + (f"ALSA {route} plug-in" if route in ("pulse", "pipewire") else f"{route} route"))
    print(f"{'preset':46} {'median ms':>10} {'p10 ms':>8} {'p90 ms':>8} {'min':>7} {'max':>7} {'found':>6}")
    for name, preset in PRESETS.items():
        if only is not None and only not in name:
            continue
        if preset == "echowarp-0.4":
            command = yardsticks.ready_echowarp04(work)
            found = command and (yardsticks.pyaudio_index(command, capture_env, "micA"),
                                 yardsticks.pyaudio_index(command, env, "speakerB"))
            if not command or None in found:
                print(f"{name:46} skipped" + ("" if not command else f" (PyAudio lists no micA/speakerB: {found})"))
                continue
            s = socket.socket(); s.bind(("127.0.0.1", 0)); port = str(s.getsockname()[1]); s.close()
            server = spawn([command, "-u", port, "-d", found[0]], env=capture_env)
            time.sleep(2.0)
            # 0.4 opens an input unless told -o, on either side.
            client = spawn([command, "-c", "-o", "-a", "127.0.0.1", "-u", port, "-d", found[1]])
        elif preset == "trx":
            if not yardsticks.ready_trx():
                print(f"{name:46} skipped")
                continue
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0))
            port = str(s.getsockname()[1]); s.close()
            # The receiver first, so that the first packets find it.
            client = spawn(["trx-rx", "-d", "speakerB", "-h", "127.0.0.1", "-p", port])
            time.sleep(0.5)
            server = spawn(["trx-tx", "-d", "micA", "-h", "127.0.0.1", "-p", port], env=capture_env)
        elif preset == "floor":
            pulse = "--format=s16le --channels=2 --rate=48000 --latency-msec=5 --raw"
            server = spawn(["sh", "-c", f"parec -d sinkA.monitor {pulse} | pacat -d sinkB {pulse}"],
                           start_new_session=True)
            client = spawn(["true"])
        elif preset is None:
            # The same devices with no network and no EchoWarp: what the ALSA pulse plugin and
            # PipeWire cost by themselves.
            server = spawn(["sh", "-c", "arecord -q -D micA -f S16_LE -r 48000 -c 2 --buffer-time=10000 "
                            "| aplay -q -D speakerB -f S16_LE -r 48000 -c 2 --buffer-time=10000"],
                           start_new_session=True, env=capture_env)
            client = spawn(["true"])
        else:
            audio, flags = preset
            profile = os.path.join(work, "p.toml")
            with open(profile, "w") as f:
                f.write("[audio]\n" + audio)
            s = socket.socket(); s.bind(("127.0.0.1", 0)); port = str(s.getsockname()[1]); s.close()
            server = spawn([binary, "-f", profile, *DEVICES[0], "-u", port, "-q", "--stats-json"] + flags,
                           env=capture_env, stdout=subprocess.PIPE)
            time.sleep(1.0)
            # ECHOWARP_LOG=echowarp=debug in the environment keeps the client's log (the parts of
            # its set point, once a second), and the bench prints its last such line.
            client_log = open(os.path.join(work, "client.log"), "w")
            client = spawn([binary, "-f", profile, "-c", "-a", "127.0.0.1", "-u", port, *DEVICES[1],
                            "-q", "--stats-json"], stdout=subprocess.PIPE, stderr=client_log)
        # Connected, and past the start: the jitter buffer sizes itself on the worst lateness
        # of the last 10 s, which at first includes the devices' start-up.
        time.sleep(settle)
        # CPU of each side while the clicks play (utime + stime from /proc, in clock ticks).
        def ticks(pid):
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                return int(fields[11]) + int(fields[12])
            except OSError:
                return None
        threads_from = {p.pid: pwsession.thread_runtime(p.pid) for p in (server, client)}
        cpu_from = (time.monotonic(), ticks(server.pid), ticks(client.pid))
        rec_file = os.path.join(work, "rec.raw")
        rec = spawn(["pacat", "--record", "-d", "sinkB.monitor", "--format=s16le", "--channels=2",
                     f"--rate={RATE}", "--latency-msec=10"], stdout=open(rec_file, "wb"))
        time.sleep(0.5)
        play = spawn(["pacat", "--playback", "-d", "both", "--format=s16le", "--channels=2",
                      f"--rate={RATE}", click_file])
        if stalls:
            import threading

            def stall_graph():
                for ms in stalls:
                    time.sleep(seconds / (len(stalls) + 1))
                    session.stall(ms / 1000)

            staller = threading.Thread(target=stall_graph, daemon=True)
            staller.start()
        play.wait()
        if stalls:
            staller.join()
        time.sleep(1.0)
        cpu_to = (time.monotonic(), ticks(server.pid), ticks(client.pid))
        threads_to = {p.pid: pwsession.thread_runtime(p.pid) for p in (server, client)}
        cpu = ""
        if preset not in (None, "floor") and None not in cpu_from + cpu_to:
            span = (cpu_to[0] - cpu_from[0]) * os.sysconf("SC_CLK_TCK") / 100.0
            cpu = (f"CPU while clicking: server {(cpu_to[1] - cpu_from[1]) / span:.2f} %, "
                   f"client {(cpu_to[2] - cpu_from[2]) / span:.2f} % of a core")
        for p in (rec, client):
            p.send_signal(signal.SIGINT)
            p.wait(timeout=10)
        if preset is None or preset == "floor":
            os.killpg(server.pid, signal.SIGINT)
        else:
            server.send_signal(signal.SIGINT)
        server.wait(timeout=10)
        depth, devices, reported = "", None, None
        if client.stdout is not None:
            import json

            def figures(proc):
                return [json.loads(l) for l in proc.stdout.read().decode().splitlines() if l.strip()]

            def median(values):
                values = sorted(v for v in values if v is not None)
                return values[len(values) // 2] if values else None

            lines, slines = figures(client), figures(server)
            if series:
                print("  second  depth ms  target ms  late  lost  trimmed  drift ppm")
                for n, l in enumerate(lines):
                    print(f"  {n:6d}  {l['depth_ms']:8.1f}  {l['target_ms']:9.1f}  {l['late']:4d}  {l['lost']:4d}  "
                          f"{l.get('trimmed', 0):7d}  {l['drift_ppm']:9.0f}")
            if lines:
                d = median(l["depth_ms"] for l in lines[2:] or lines)
                # What the client reports while the clicks play (capture device in to playback
                # device out, from the heartbeats' anchors), against the clicks' own delay.
                clicking = [l for l in lines if l.get("t", 0) >= settle] or lines
                reported = median(l.get("latency_ms") for l in clicking)
                depth = f"   (client buffer {d:.1f} ms of {lines[-1]['target_ms']:.1f}, jitter {lines[-1]['jitter_ms']:.2f} ms)"
            # What ALSA reports each device holds: capture to callback on the server, callback
            # to playing on the client. The rest of the click's delay is EchoWarp's own.
            dev_in = median(l.get("device_ms") for l in slines[2:] or slines)
            dev_out = median(l.get("device_ms") for l in lines[2:] or lines)
            if dev_in is not None and dev_out is not None:
                devices = (dev_in, dev_out)
        data = open(rec_file, "rb").read()
        left = struct.unpack(f"<{len(data) // 4 * 2}h", data[: len(data) // 4 * 4])[0::2]
        # Onsets: the first sample above a threshold after 5 ms of quiet.
        onsets, quiet = [], 0
        for i, v in enumerate(left):
            if abs(v) > 4000:
                if quiet >= RATE // 200:
                    onsets.append(i)
                quiet = 0
            else:
                quiet += 1
        # Pair each direct click with the next onset within 300 ms (EchoWarp's copy).
        lat, i = [], 0
        while i + 1 < len(onsets):
            gap = onsets[i + 1] - onsets[i]
            if gap < RATE * 3 // 10:
                lat.append(1000.0 * gap / RATE)
                i += 2
            else:
                i += 1
        lat.sort()
        if not lat:
            gaps = [round(1000.0 * (b - a) / RATE) for a, b in zip(onsets, onsets[1:])][:6]
            print(f"{name:46} no click pairs found ({len(onsets)} onsets, first gaps {gaps} ms)")
            continue
        q = lambda f: lat[min(len(lat) - 1, int(f * len(lat)))]
        print(f"{name:46} {q(0.5):10.1f} {q(0.1):8.1f} {q(0.9):8.1f} {lat[0]:7.1f} {lat[-1]:7.1f} {len(lat):6d}{depth}")
        if preset is not None and client.stdout is not None:
            print(f"{'':46} the client reports {reported:.1f} ms (median while clicking), the clicks take {q(0.5):.1f} ms: off by {reported - q(0.5):+.1f} ms"
                  if reported is not None else f"{'':46} the client reports no latency")
        if devices:
            print(f"{'':46} callback to callback {q(0.5) - devices[0] - devices[1]:.1f} ms median "
                  f"(the devices report {devices[0]:.1f} ms capture and {devices[1]:.1f} ms playback)")
        if cpu:
            print(f"{'':46} {cpu}")
        if cpu and per_thread:
            secs = cpu_to[0] - cpu_from[0]
            for side, p in (("server", server), ("client", client)):
                # Run time (schedstat, ns) as % of a core, and wake-ups (voluntary sleeps) a second.
                busy = sorted(((ns - threads_from[p.pid].get(k, (0, 0))[0]) / secs / 1e7,
                               (sl - threads_from[p.pid].get(k, (0, 0))[1]) / secs, k[1])
                              for k, (ns, sl) in threads_to[p.pid].items())
                print(f"{'':46} {side} threads: " + ", ".join(f"{n} {c:.2f} % ({w:.0f}/s)" for c, w, n in reversed(busy) if c >= 0.005))
        if isinstance(preset, tuple):
            parts = [l for l in open(os.path.join(work, "client.log"), errors="replace") if "set point" in l]
            if parts:
                print(f"{'':46} client's last: {parts[-1].split('depth ', 1)[-1].strip()}")
finally:
    session.close()
