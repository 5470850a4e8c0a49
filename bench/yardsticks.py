"""The tools EchoWarp is measured against, made ready for a benchmark run: trx (Opus over RTP,
from apt) and EchoWarp 0.4 (the Python original, from PyPI in a throw-away virtual
environment, with PyAudio from apt). Each `ready_*` returns what to run, or None and says why
it is skipped; nothing here fails a run.

EchoWarp 0.4 opens a device with the largest channel count PortAudio reports (32 for an ALSA
pulse PCM, which no ALSA wrapper narrows), so its environment gets a `sitecustomize` that makes
PyAudio report at most two: a stereo device, as a desktop's usually is. Its devices are picked
by the index PyAudio gives them.
"""
import os
import shutil
import subprocess
import sys

# Loaded by the 0.4 environment's Python at start: devices report at most two channels.
STEREO = """\
import pyaudio

_info = pyaudio.PyAudio.get_device_info_by_index


def _stereo(self, index):
    d = dict(_info(self, index))
    for key in ("maxInputChannels", "maxOutputChannels"):
        d[key] = min(d[key], 2)
    return d


pyaudio.PyAudio.get_device_info_by_index = _stereo
"""


def _apt_install(packages):
    """Installs Debian packages if this process may (root, or sudo without a password)."""
    missing = [p for p in packages
               if subprocess.run(["dpkg-query", "-W", "-f=${Status}", p], capture_output=True,
                                 text=True).stdout.find("install ok installed") < 0]
    if not missing:
        return True
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    done = subprocess.run(sudo + ["apt-get", "install", "-y", "-qq", "--no-install-recommends"]
                          + missing, env=env, capture_output=True)
    return done.returncode == 0


def ready_trx():
    """trx-tx and trx-rx on PATH (installed with apt-get if they are not), or None."""
    if not shutil.which("trx-tx"):
        _apt_install(["trx"])
    if shutil.which("trx-tx"):
        return True
    print("  (trx skipped: not installed, and `apt-get install trx` could not run here)")
    return None


def ready_echowarp04(work):
    """The `echowarp` command of EchoWarp 0.4.0 in a virtual environment under `work`, or None."""
    if not _apt_install(["python3-venv", "python3-pyaudio"]):
        print("  (EchoWarp 0.4 skipped: python3-venv and python3-pyaudio could not be installed)")
        return None
    venv = os.path.join(work, "echowarp-0.4")
    # The system's PyAudio (built against PortAudio by Debian) is used, not built here: the
    # environment is made from the Python it belongs to.
    python = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
    made = subprocess.run([python, "-m", "venv", "--system-site-packages", venv],
                          capture_output=True, text=True)
    pip = os.path.join(venv, "bin", "pip")
    if made.returncode == 0:
        # 0.4.0 imports psutil without declaring it.
        made = subprocess.run([pip, "install", "-q", "echowarp==0.4.0", "psutil"],
                              capture_output=True, text=True)
    command = os.path.join(venv, "bin", "echowarp")
    site = subprocess.run([os.path.join(venv, "bin", "python"), "-c",
                           "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True).stdout.strip()
    if site:
        with open(os.path.join(site, "sitecustomize.py"), "w") as f:
            f.write(STEREO)
    if made.returncode != 0 or not os.path.exists(command):
        print(f"  (EchoWarp 0.4 skipped: {(made.stderr or made.stdout).strip().splitlines()[-1:]})")
        return None
    return command


def pyaudio_index(command, env, name):
    """PyAudio's index of the ALSA device `name`, as EchoWarp 0.4's `-d` takes it, or None."""
    python = os.path.join(os.path.dirname(command), "python")
    probe = ("import pyaudio\n"
             "p = pyaudio.PyAudio()\n"
             "for i in range(p.get_device_count()):\n"
             "    print(i, p.get_device_info_by_index(i)['name'])\n")
    out = subprocess.run([python, "-c", probe], env=env, capture_output=True, text=True).stdout
    for line in out.splitlines():
        index, _, device = line.partition(" ")
        if device.split(" ")[0] == name or device == name:
            return index
    return None
