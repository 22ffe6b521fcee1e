"""What tests/peers/peers.py and tests/peers/dnssec.py share.

Not a script: both import it from their own directory (peers.py through
sys.path[0], dnssec.py by adding its directory to sys.path), so they keep
working when run directly from any current directory.  Nothing happens on
import.  Only the Python standard library is used.

  process helpers  log, which, run_proc, pid_alive, proc_list, proc_cmdline,
                   read_pidfile, kill_pid, stop_by_pidfile
  files            remove_paths, write_atomic, write_env, read_env
  ports            bind_ok, port_candidates
  DNS wire format  TYPES, TYPE_NAMES, RCODES, encode_name, decode_name
  commands         command_parser, add_key_type (argparse), start_command
                   (`start`), run_command (`run`: signals, the child,
                   CI=true), Checks (`selftest` bookkeeping)

Each script sets PROG to its name (the prefix of log()).
"""

import argparse
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time

EXIT_SKIP = 77                    # meson's "skipped"
SBIN_PATH = "/usr/sbin:/sbin:/usr/bin:/bin"
PORT_RANGE = (20000, 40000)       # where free ports are looked for
PROG = "peerlib.py"               # set by the script: "peers.py", "dnssec.py"


class PeerError(Exception):
    """Start failure: exit 1."""


class PeerMissing(PeerError):
    """A required program is missing (or we are not root): skippable."""


def log(msg):
    print("%s: %s" % (PROG, msg), file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# processes (signals only ever go to PIDs we started or recorded)

def which(prog):
    return shutil.which(prog, path=os.environ.get("PATH", "") + ":" + SBIN_PATH)


def run_proc(argv, timeout, missing="peer missing", timed_out="command timed out",
             **kw):
    """subprocess.run(argv, timeout=timeout, **kw).  A program that is not
    there raises PeerMissing("MISSING: ..."), a timeout
    PeerError("TIMED_OUT after Ns: ARGV")."""
    try:
        return subprocess.run(argv, timeout=timeout, **kw)
    except FileNotFoundError as e:
        raise PeerMissing("%s: %s" % (missing, e)) from None
    except subprocess.TimeoutExpired:
        raise PeerError("%s after %ss: %s" % (timed_out, timeout, " ".join(argv)))


def pid_alive(pid):
    """True if pid exists and is not a zombie."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            stat = f.read()
    except OSError:
        return False
    try:
        return stat[stat.rindex(")") + 2] not in ("Z", "X")
    except (ValueError, IndexError):
        return True


def proc_list(pid, name):
    """/proc/PID/NAME (cmdline, environ) split at NUL bytes; [] if unreadable."""
    try:
        with open("/proc/%d/%s" % (pid, name), "rb") as f:
            return f.read().split(b"\0")
    except OSError:
        return []


def proc_cmdline(pid):
    return proc_list(pid, "cmdline")


def read_pidfile(path):
    try:
        with open(path) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _reap(pid):
    try:
        os.waitpid(pid, os.WNOHANG)     # if it is our child
    except ChildProcessError:
        pass


def kill_pid(pid, what, timeout=5.0):
    """SIGTERM, wait (bounded), then SIGKILL.  Only called on our own pids."""
    if not pid_alive(pid):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap(pid)
        if not pid_alive(pid):
            return
        time.sleep(0.02)
    log("%s (pid %d) ignored SIGTERM, sending SIGKILL" % (what, pid))
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline and pid_alive(pid):
        _reap(pid)
        time.sleep(0.02)


def stop_by_pidfile(pidfile, marker, what, whole_arg=False, not_ours="it is not ours"):
    """kill_pid() the process pidfile names, if it runs and is ours: its
    command line contains marker (whole_arg: as one whole argument)."""
    pid = read_pidfile(pidfile)
    if pid is None or not pid_alive(pid):
        return
    args = proc_cmdline(pid)
    cmd = b" ".join(args)
    if marker.encode() not in (args if whole_arg else cmd):
        log("not stopping pid %d from %s: %s (%r)" % (pid, pidfile, not_ours, cmd[:200]))
        return
    kill_pid(pid, what)


# --------------------------------------------------------------------------
# files

def remove_paths(paths):
    """Remove each file or directory tree that exists (links themselves)."""
    for path in paths:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        elif os.path.lexists(path):
            os.unlink(path)


def write_atomic(path, text):
    with open(path + ".tmp", "w") as fp:
        fp.write(text)
    os.rename(path + ".tmp", path)


def write_env(path, env):
    """The env file: KEY=VALUE lines (read_env, sh `. FILE`, the C tests)."""
    write_atomic(path, "".join("%s=%s\n" % (k, v) for k, v in env.items()))


def read_env(path):
    env = {}
    with open(path) as fp:
        for line in fp:
            line = line.rstrip("\n")
            if "=" in line and not line.startswith("#"):
                k, v = line.split("=", 1)
                env[k] = v
    return env


# --------------------------------------------------------------------------
# ports

def bind_ok(addr, port, kind, listen=True):
    """Whether addr:port can be bound (and, for TCP with listen, listened on)."""
    s = socket.socket(socket.AF_INET, kind)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((addr, port))
        if listen and kind == socket.SOCK_STREAM:
            s.listen(1)
        return True
    except OSError:
        return False
    finally:
        s.close()


def port_candidates():
    """Every port of PORT_RANGE once, from a random one on (wrapping)."""
    lo, hi = PORT_RANGE
    rnd = random.Random(os.getpid() ^ int(time.time() * 1000))
    start = rnd.randrange(lo, hi)
    for i in range(hi - lo):
        yield lo + (start - lo + i) % (hi - lo)


# --------------------------------------------------------------------------
# DNS wire format

TYPES = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "PTR": 12, "MX": 15, "TXT": 16,
         "AAAA": 28, "SRV": 33, "OPT": 41, "DS": 43, "RRSIG": 46, "NSEC": 47,
         "DNSKEY": 48, "NSEC3": 50, "TLSA": 52, "ANY": 255}
TYPE_NAMES = {v: k for k, v in TYPES.items()}
RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP",
          5: "REFUSED"}


def encode_name(name):
    out = b""
    for label in name.rstrip(".").split("."):
        if label:
            out += bytes([len(label)]) + label.encode("ascii")
    return out + b"\0"


def decode_name(msg, off, lower=False):
    """(name without the final dot, offset after it); follows compression
    pointers.  lower: lowercase the labels."""
    labels, end, jumped = [], None, False
    for _ in range(128):
        n = msg[off]
        if n == 0:
            off += 1
            break
        if n & 0xC0 == 0xC0:
            if not jumped:
                end = off + 2
            jumped = True
            off = ((n & 0x3F) << 8) | msg[off + 1]
            continue
        label = msg[off + 1:off + 1 + n].decode("ascii", "replace")
        labels.append(label.lower() if lower else label)
        off += 1 + n
    else:
        raise ValueError("name too long / loop")
    return ".".join(labels), (end if jumped else off)


# --------------------------------------------------------------------------
# commands

def command_parser(doc, start_opts):
    """argparse for PROG with the commands start, stop and run (in that
    order), each with --dir; start and run get start_opts(subparser)'s
    options too, run the CMD ARGS... after "--".  Returns (parser,
    subparsers) for the script's other commands."""
    ap = argparse.ArgumentParser(prog=PROG, description=doc,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    for name in ("start", "stop", "run"):
        sp = sub.add_parser(name)
        sp.add_argument("--dir", required=True)
        if name != "stop":
            start_opts(sp)
    sp.add_argument("cmd", nargs=argparse.REMAINDER)
    return ap, sub


def add_key_type(sp, help):
    """--key-type ec|rsa (certs.py's), default $TM_PEERS_KEY_TYPE or ec."""
    sp.add_argument("--key-type", choices=("ec", "rsa"),
                    default=os.environ.get("TM_PEERS_KEY_TYPE", "ec"), help=help)


def start_command(start):
    """`start`: start(); exit 0, or 1 (with a message) if it fails."""
    try:
        start()
    except PeerError as e:
        log("start failed: %s" % e)
        return 1
    except KeyboardInterrupt:
        log("start interrupted")
        return 1
    return 0


class Terminated(Exception):
    pass


def run_command(cmd, start, stop, what, ignore_sigint=False):
    """`run`: env = start(), run cmd ("--" first is dropped) with os.environ
    + env, always stop() (SIGTERM ignored meanwhile; SIGINT too with
    ignore_sigint).  Returns cmd's exit code (128+N if signal N killed it),
    130 on SIGINT/SIGTERM (cmd is terminated), EXIT_SKIP if start() raised
    PeerMissing (1 with CI=true), 1 on another PeerError, 127 if cmd cannot
    be run, 2 without cmd.  what: what is stopped, for the message."""
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        log("run: no command given (%s run --dir DIR -- CMD ARGS...)" % PROG)
        return 2

    def on_term(signum, frame):
        raise Terminated()
    old_term = signal.signal(signal.SIGTERM, on_term)
    child = None
    try:
        try:
            env = start()
        except PeerMissing as e:
            if os.environ.get("CI", "").lower() == "true":
                log("%s (CI=true: failing)" % e)
                return 1
            log("%s -- skipping" % e)
            return EXIT_SKIP
        except PeerError as e:
            log("start failed: %s" % e)
            return 1
        full_env = dict(os.environ)
        full_env.update(env)
        try:
            child = subprocess.Popen(cmd, env=full_env)
        except OSError as e:
            log("cannot run %s: %s" % (cmd[0], e))
            return 127
        rc = child.wait()
        return rc if rc >= 0 else 128 - rc
    except (KeyboardInterrupt, Terminated):
        log("interrupted, stopping %s" % what)
        if child is not None and child.poll() is None:
            child.terminate()
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        return 130
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if ignore_sigint:
            old_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
        stop()
        signal.signal(signal.SIGTERM, old_term)
        if ignore_sigint:
            signal.signal(signal.SIGINT, old_int)


class Checks:
    """`selftest` bookkeeping: check(cond, what) prints "ok   what" or
    "FAIL what"; done() prints the count and returns the exit code."""

    def __init__(self):
        self.failures = []
        self.t_start = time.monotonic()

    def __call__(self, cond, what):
        print("%s %s" % ("ok  " if cond else "FAIL", what), flush=True)
        if not cond:
            self.failures.append(what)

    def done(self):
        print("selftest: %d failure(s) in %.2fs"
              % (len(self.failures), time.monotonic() - self.t_start))
        return 1 if self.failures else 0
