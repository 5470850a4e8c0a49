#!/usr/bin/env python3
"""Streams 48 kHz stereo PCM between an EchoWarp server and client on 127.0.0.1 and prints, per
side, CPU seconds, peak RSS and bytes sent or received (release build; figures, not pass/fail).

    python3 bench/stream.py [SECONDS] [--threads] [extra server flags...]
    e.g. 60, or 60 --no-encryption, or 60 --codec opus, or 60 --redundancy
    (--threads: each side's steady-state CPU and wake-ups per second, thread by thread)

CPU seconds come from the kernel's rusage of each process (wait4): exact for the process,
whatever else the machine does. "steady" is the CPU between 3 s in and 1 s before the end
(the threads' run times from /proc/PID/task/*/schedstat, nanoseconds; 10 ms ticks from
/proc/PID/stat where the kernel keeps no schedstats): what a long session costs, start-up
excluded. Peak RSS is the kernel's VmHWM, read from /proc while each
process runs (wait4's ru_maxrss would count the forking Python's pages too). The bytes are what
EchoWarp itself counted.
"""
import math, os, re, struct, subprocess, sys, tempfile, time, wave

import pwsession

seconds = int(sys.argv[1]) if len(sys.argv) > 1 else 60
extra = sys.argv[2:]
per_thread = "--threads" in extra
if per_thread:
    extra.remove("--threads")
root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
binary = pwsession.echowarp_binary(root)  # $ECHOWARP_BIN, or the release build

work = tempfile.mkdtemp(prefix="echowarp-bench-")
env = dict(os.environ, XDG_CONFIG_HOME=os.path.join(work, "cfg"), XDG_DATA_HOME=os.path.join(work, "data"))
wav_in = os.path.join(work, "in.wav")
with wave.open(wav_in, "wb") as w:
    w.setnchannels(2); w.setsampwidth(2); w.setframerate(48000)
    block = b"".join(struct.pack("<hh", int(12000 * math.sin(2 * math.pi * 440 * i / 48000)), int(9000 * math.sin(2 * math.pi * 660 * i / 48000))) for i in range(48000))
    for _ in range(seconds):
        w.writeframes(block)

import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
server = subprocess.Popen([binary, "-d", "wav:" + wav_in, "-u", str(port), "-p", "bench"] + extra,
                          env=env, stderr=subprocess.PIPE, text=True)
line = ""
while "listening on" not in line:
    line = server.stderr.readline()
    if not line:
        sys.exit("server did not start")
client = subprocess.Popen([binary, "-c", "-a", "127.0.0.1", "-u", str(port), "-p", "bench", "-d", "null", "-q"],
                          env=dict(env, ECHOWARP_LOG="echowarp=info"), stderr=subprocess.PIPE, text=True)
import threading
peak = {server.pid: 0, client.pid: 0}
def watch():
    while any(p.poll() is None for p in (server, client)):
        for pid in peak:
            try:
                with open(f"/proc/{pid}/status") as f:
                    for l in f:
                        if l.startswith("VmHWM:"):
                            peak[pid] = max(peak[pid], int(l.split()[1]))
            except OSError:
                pass
        time.sleep(0.05)
threading.Thread(target=watch, daemon=True).start()

# Steady state: CPU between 3 s in and 1 s before the end, from /proc (start-up, the handshake
# and the shared libraries' loading excluded; what a long session costs per second).
steady = {}
threads = {}
def ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime
def window():
    try:
        time.sleep(3)
        a = {pid: ticks(pid) for pid in peak}
        ta = {pid: pwsession.thread_runtime(pid) for pid in peak}
        t0 = time.monotonic()
        time.sleep(max(1, seconds - 4))
        b = {pid: ticks(pid) for pid in peak}
        tb = {pid: pwsession.thread_runtime(pid) for pid in peak}
        span = time.monotonic() - t0
        for pid in peak:
            threads[pid] = sorted(((ns - ta[pid].get(k, (0, 0))[0]) / span / 1e7,
                                   (sl - ta[pid].get(k, (0, 0))[1]) / span, k[1])
                                  for k, (ns, sl) in tb[pid].items())
        hz = os.sysconf("SC_CLK_TCK")
        for pid in peak:
            steady[pid] = 100.0 * (b[pid] - a[pid]) / hz / span
            # Where the kernel keeps schedstats, the threads' own run times are exact (ticks
            # are 10 ms: 0.07 % of a core over 15 s).
            if ta[pid] and tb[pid]:
                steady[pid] = sum(c for c, _, _ in threads[pid])
    except (OSError, ValueError):
        pass
threading.Thread(target=window, daemon=True).start()
start = time.monotonic()
_, cstatus, crusage = os.wait4(client.pid, 0)
client_err = client.stderr.read()
_, sstatus, srusage = os.wait4(server.pid, 0)
server_err = server.stderr.read()
wall = time.monotonic() - start

def grab(pattern, text):
    m = re.search(pattern, text)
    return int(m.group(1)) if m else -1

sent = grab(r"sent \d+ datagrams, (\d+) bytes", server_err)
received = grab(r"received (\d+) bytes", client_err)
pcm_rate = 48000 * 2 * 2
print(f"streamed {seconds} s of 48 kHz stereo ({' '.join(extra) or 'pcm, encrypted'}) in {wall:.1f} s wall; exit codes {cstatus >> 8}, {sstatus >> 8}")
print(f"{'side':8} {'CPU s':>7} {'user s':>7} {'sys s':>7} {'% of a core':>12} {'steady %':>9} {'peak RSS MiB':>13} {'bytes':>12}")
for name, ru, b, pid in (("server", srusage, sent, server.pid), ("client", crusage, received, client.pid)):
    cpu = ru.ru_utime + ru.ru_stime
    st = f"{steady[pid]:8.2f}%" if pid in steady else f"{'-':>9}"
    print(f"{name:8} {cpu:7.2f} {ru.ru_utime:7.2f} {ru.ru_stime:7.2f} {100 * cpu / seconds:11.2f}% {st} {peak[pid] / 1024:13.1f} {b:12d}")
    if per_thread and pid in threads:
        print(f"{'':8} threads (steady CPU, wake-ups/s): " + ", ".join(
            f"{n} {c:.2f}% {w:.0f}/s" for c, w, n in reversed(threads[pid]) if c >= 0.005 or w >= 1))
both = (srusage.ru_utime + srusage.ru_stime + crusage.ru_utime + crusage.ru_stime)
steady_both = f"; steady state {sum(steady.values()):.2f}%" if len(steady) == 2 else ""
print(f"both sides: {100 * both / seconds:.2f}% of one core over the whole run{steady_both}")
datagrams = grab(r"sent (\d+) datagrams", server_err)
if sent > 0:
    udp_ip = sent + datagrams * 28  # 20 B IPv4 + 8 B UDP headers per datagram
    print(f"wire rate: {8 * sent / seconds / 1e6:.3f} Mb/s of UDP payload ({100 * (sent / seconds / pcm_rate - 1):+.1f}% over PCM's 1.536 Mb/s), "
          f"{8 * udp_ip / seconds / 1e6:.3f} Mb/s with IP/UDP headers ({100 * (udp_ip / seconds / pcm_rate - 1):+.1f}%)")
