"""A private PipeWire session for the benchmarks that need real devices and no sound card
(testing.md): a D-Bus session bus, PipeWire, WirePlumber and pipewire-pulse under a fresh
runtime folder, null sinks loaded with pactl, and ALSA device names from an asoundrc that only
the session's children read.

    with Session("echowarp-x-", asoundrc, [["module-null-sink", "sink_name=sinkA"]]) as pw:
        p = pw.spawn(["echowarp", "-d", "micA"])
"""
import os
import signal
import subprocess
import sys
import tempfile
import time


class Session:
    def __init__(self, prefix, asoundrc, modules):
        self.work = tempfile.mkdtemp(prefix=prefix)
        run = os.path.join(self.work, "run")
        os.makedirs(run, mode=0o700)
        os.makedirs(os.path.join(self.work, "config", "alsa"))
        with open(os.path.join(self.work, "config", "alsa", "asoundrc"), "w") as f:
            f.write(asoundrc)
        # XDG_STATE_HOME: WirePlumber's remembered defaults and stream targets stay in the run.
        self.env = dict(os.environ, XDG_RUNTIME_DIR=run,
                        XDG_CONFIG_HOME=os.path.join(self.work, "config"),
                        XDG_STATE_HOME=os.path.join(self.work, "state"),
                        XDG_DATA_HOME=os.path.join(self.work, "data"), PIPEWIRE_LOG_LEVEL="0")
        self.children = []
        try:
            bus = self.spawn(["dbus-daemon", "--session", "--nofork", "--print-address=1",
                              f"--address=unix:path={run}/bus"], stdout=subprocess.PIPE)
            self.env["DBUS_SESSION_BUS_ADDRESS"] = bus.stdout.readline().decode().strip()
            for prog in ("pipewire", "wireplumber", "pipewire-pulse"):
                started = self.spawn([prog])
                if prog == "pipewire":
                    self.pipewire = started
                time.sleep(0.3)
            for _ in range(100):
                if subprocess.run(["pactl", "info"], env=self.env, capture_output=True).returncode == 0:
                    break
                time.sleep(0.1)
            else:
                sys.exit("pipewire-pulse did not come up")
            for module in modules:
                subprocess.run(["pactl", "load-module"] + module, env=self.env, check=True,
                               capture_output=True)
        except BaseException:
            self.close()
            raise

    def spawn(self, args, **kw):
        """Starts a child in the session (its environment unless `env` is given); output is
        discarded unless `stdout` or `stderr` say otherwise. Stopped by close()."""
        p = subprocess.Popen(args, env=kw.pop("env", self.env),
                             stdout=kw.pop("stdout", subprocess.DEVNULL),
                             stderr=kw.pop("stderr", subprocess.DEVNULL), **kw)
        self.children.append(p)
        return p

    def stall(self, seconds):
        """Freezes the PipeWire daemon for `seconds` (SIGSTOP, then SIGCONT): every device
        stalls at once and the time is lost, as when a busy machine starves the audio server."""
        self.pipewire.send_signal(signal.SIGSTOP)
        try:
            time.sleep(seconds)
        finally:
            self.pipewire.send_signal(signal.SIGCONT)

    def close(self):
        """Stops every child, newest first: SIGINT, then SIGKILL after 5 s."""
        for p in reversed(self.children):
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
                try:
                    p.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    p.kill()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def thread_ticks(pid):
    """CPU time (utime + stime, in clock ticks) of each of a process's threads, keyed by
    (thread id, name); empty once the process is gone."""
    out = {}
    try:
        for t in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{t}/stat") as f:
                d = f.read()
            fields = d.rsplit(")", 1)[1].split()
            out[(t, d[d.index("(") + 1:d.rindex(")")])] = int(fields[11]) + int(fields[12])
    except OSError:
        pass
    return out


def thread_runtime(pid):
    """Per thread of a process, keyed by (thread id, name): the CPU time it has run, in
    nanoseconds (/proc's schedstat, exact where ticks are 10 ms), and how many times it has
    gone to sleep of its own accord (its wake-ups, near enough). Empty once the process is gone."""
    out = {}
    try:
        for t in os.listdir(f"/proc/{pid}/task"):
            base = f"/proc/{pid}/task/{t}"
            with open(f"{base}/comm") as f:
                name = f.read().strip()
            with open(f"{base}/schedstat") as f:
                ns = int(f.read().split()[0])
            with open(f"{base}/status") as f:
                sleeps = next(int(l.split()[1]) for l in f if l.startswith("voluntary_ctxt_switches"))
            out[(t, name)] = (ns, sleeps)
    except (OSError, StopIteration, ValueError):
        pass
    return out


def echowarp_binary(root):
    """The echowarp binary a benchmark runs: $ECHOWARP_BIN if set (to compare two builds, each
    built once, without rebuilding between runs), else the release build of the tree at `root`
    (built now if out of date)."""
    given = os.environ.get("ECHOWARP_BIN")
    if given:
        if not os.access(given, os.X_OK):
            sys.exit(f"ECHOWARP_BIN={given}: not an executable file")
        return os.path.abspath(given)
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=root, check=True)
    return os.path.join(root, "target", "release", "echowarp")
