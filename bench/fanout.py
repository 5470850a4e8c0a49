#!/usr/bin/env python3
"""One server, 1, 4 and 16 clients on 127.0.0.1: the server's CPU and the bytes it sends per
client, and each client's CPU (release build; figures, not pass/fail). The server streams a
440 Hz tone; clients play into `null`. CPU comes from each process's rusage (wait4).

    python3 bench/fanout.py [SECONDS] [extra server flags...]    e.g. 20, or 20 --codec opus
"""
import os, re, socket, subprocess, sys, tempfile, time, signal

import pwsession

seconds = int(sys.argv[1]) if len(sys.argv) > 1 else 20
extra = sys.argv[2:]
root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
binary = pwsession.echowarp_binary(root)  # $ECHOWARP_BIN, or the release build


def run(n):
    work = tempfile.mkdtemp(prefix="echowarp-fanout-")
    env = dict(os.environ, XDG_CONFIG_HOME=os.path.join(work, "cfg"),
               XDG_DATA_HOME=os.path.join(work, "data"), ECHOWARP_LOG="echowarp=info")
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
    server = subprocess.Popen([binary, "-d", "tone:440", "-u", str(port), "-w", str(n), "-r", "0"] + extra,
                              env=env, stderr=subprocess.PIPE, text=True)
    line = ""
    while "listening on" not in line:
        line = server.stderr.readline()
        if not line:
            sys.exit("server did not start")
    clients = [subprocess.Popen([binary, "-c", "-a", "127.0.0.1", "-u", str(port), "-d", "null", "-q"],
                                env=env, stderr=subprocess.DEVNULL) for _ in range(n)]
    time.sleep(seconds)
    for c in clients:
        c.send_signal(signal.SIGINT)
    crus = [os.wait4(c.pid, 0)[2] for c in clients]
    server.send_signal(signal.SIGINT)
    _, _, srus = os.wait4(server.pid, 0)
    err = server.stderr.read()
    m = re.search(r"sent (\d+) datagrams, (\d+) bytes", err)
    sent = int(m.group(2)) if m else -1
    scpu = srus.ru_utime + srus.ru_stime
    ccpu = sum(r.ru_utime + r.ru_stime for r in crus) / n
    return scpu, ccpu, sent


print(f"fan-out, {seconds} s of 48 kHz stereo tone per run ({' '.join(extra) or 'pcm, encrypted'})")
print(f"{'clients':>7} {'server % core':>14} {'server % per client':>20} {'client % core':>14} {'kB/s per client':>16}")
for n in (1, 4, 16):
    scpu, ccpu, sent = run(n)
    print(f"{n:7d} {100 * scpu / seconds:13.2f}% {100 * scpu / seconds / n:19.2f}% {100 * ccpu / seconds:13.2f}% "
          f"{sent / seconds / n / 1000:16.1f}")
