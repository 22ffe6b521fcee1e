#!/usr/bin/python3
"""Real SMTP/DNS peers for the libtlsmail tests (see tests/peers/README.md).

Starts, on loopback only, a private Postfix instance with one smtpd listener
per test MX host (127.0.0.2 .. 127.0.0.11, all on one high port), a dnsmasq
serving the tm.test and sts.test zones, a second dnsmasq whose sts.test
differs (MTA-STS TXT records gone or changed: TM_TEST_DNS_ALT), and a small
"broken DNS" child (SERVFAIL on one port, silence on another).  Everything
lives in the directory given with --dir.

Commands:
  start     --dir DIR [--port N]       build + start, write DIR/env, DIR/peers.json
  stop      --dir DIR                  stop everything started from DIR
  run       --dir DIR [--port N] -- CMD ARGS...
  wait-mail --dir DIR --to ADDR [--count 1] [--timeout 10]
  query     --dir DIR NAME [TYPE] [--server alt|broken|timeout|HOST:PORT]
  selftest  --dir DIR                  check running peers end to end
  dns-broken (internal: the SERVFAIL/timeout responder child)

Only the Python standard library is used.
"""

import errno
import json
import os
import pty
import pwd
import grp
import random
import re
import select
import selectors
import signal
import socket
import struct
import subprocess
import sys
import time

# tests/peers/certs.py and tests/peers/peerlib.py (the script's own directory)
import certs
import peerlib
from peerlib import (SBIN_PATH, PeerError, PeerMissing, log, which, run_proc,
                     pid_alive, proc_list, read_pidfile, kill_pid, stop_by_pidfile,
                     remove_paths, write_atomic, write_env, read_env, bind_ok,
                     port_candidates, TYPES, TYPE_NAMES, RCODES, encode_name, decode_name)

peerlib.PROG = "peers.py"

# key, address, host name, smtpd_tls_security_level, certificate base name
LISTENERS = [
    ("VALID", "127.0.0.2", "mx-valid.tm.test", "may", "valid"),
    ("WRONGNAME", "127.0.0.3", "mx-wrongname.tm.test", "may", "wrongname"),
    ("EXPIRED", "127.0.0.4", "mx-expired.tm.test", "may", "expired"),
    ("SELFSIGNED", "127.0.0.5", "mx-selfsigned.tm.test", "may", "selfsigned"),
    ("PLAIN", "127.0.0.6", "mx-plain.tm.test", "none", None),
    ("WILD", "127.0.0.7", "mx.wild.tm.test", "may", "wildcard"),
    ("CHAIN", "127.0.0.8", "mx-chain.tm.test", "may", "intermediate"),
    ("NOTYET", "127.0.0.9", "mx-notyet.tm.test", "may", "notyet"),
    # DANE-TA (tests/dane): a leaf for dane.test names from the intermediate
    # CA, sent with the intermediate; its names live in dnssec.py's zone
    ("DANE_TA", "127.0.0.10", "mx-ta.dane.test", "may", "dane-ta"),
    # offers STARTTLS and answers it "500 5.5.2 Error: command not
    # recognized" (smtpd_command_filter turns it into an unknown command)
    ("REFUSETLS", "127.0.0.11", "mx-refusetls.tm.test", "may", "valid"),
]
# extra smtpd -o options per listener key
LISTENER_OPTIONS = {
    "REFUSETLS": ["smtpd_command_filter=regexp:{p.postfix}/refuse_starttls"],
}
# certificate base name -> the file a listener sends (leaf + intermediate)
CHAIN_FILES = {"intermediate": "intermediate-chain.pem", "dane-ta": "dane-ta-chain.pem"}
DEAD_ADDR = "127.0.0.20"          # mx-dead.tm.test: nothing listens there
STS_HTTPS_ADDR = "127.0.0.1"      # mta-sts.*.sts.test: where sts_https.py listens
DNS_ADDR = "127.0.0.1"
READY_TIMEOUT = 20.0              # seconds, for all listeners together
BROKEN_DNS_LIFETIME = 30 * 60     # the broken-DNS child exits by itself


# --------------------------------------------------------------------------
# small process helpers (the rest are peerlib's)

def run_cmd(argv, timeout=60, env=None, cwd=None):
    """Run a short command, return (rc, combined output).  Raises PeerError."""
    p = run_proc(argv, timeout, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                 stderr=subprocess.STDOUT, env=env, cwd=cwd)
    return p.returncode, p.stdout.decode("utf-8", "replace")


def run_tty(argv, timeout=60, env=None):
    """Run a command with stdout/stderr on a pseudo terminal.

    The postfix(1) command only prints its errors when stderr is a tty; with a
    pipe it fails silently.  The daemons it starts may keep the tty open, so we
    never wait for EOF: we wait for the process and then drain what is there.
    """
    master, slave = pty.openpty()
    try:
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=slave,
                             stderr=slave, env=env, start_new_session=True)
    except FileNotFoundError as e:
        os.close(master)
        os.close(slave)
        raise PeerMissing("peer missing: %s" % e) from None
    os.close(slave)
    out = b""
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                p.kill()
                p.wait()
                raise PeerError("command timed out after %ss: %s" % (timeout, " ".join(argv)))
            r, _, _ = select.select([master], [], [], min(left, 0.05))
            if r:
                try:
                    chunk = os.read(master, 65536)
                except OSError:
                    chunk = b""
                if chunk:
                    out += chunk
                    continue
            if p.poll() is not None:
                # drain what is left without blocking
                while select.select([master], [], [], 0)[0]:
                    try:
                        chunk = os.read(master, 65536)
                    except OSError:
                        break
                    if not chunk:
                        break
                    out += chunk
                break
    finally:
        os.close(master)
    return p.returncode, out.decode("utf-8", "replace").replace("\r\n", "\n")


# --------------------------------------------------------------------------
# paths

class Paths:
    def __init__(self, d):
        self.dir = os.path.abspath(d)
        j = lambda *a: os.path.join(self.dir, *a)
        self.certs = j("certs")
        self.postfix = j("postfix")
        self.spool = j("spool")
        self.data = j("data")
        self.mail = j("mail")
        self.postfix_log = j("postfix.log")
        self.dnsmasq_pid = j("dnsmasq.pid")
        self.dnsmasq_log = j("dnsmasq.log")
        self.dnsmasq_conf = j("dnsmasq.conf")
        self.alt_pid = j("dnsmasq-alt.pid")
        self.alt_log = j("dnsmasq-alt.log")
        self.alt_conf = j("dnsmasq-alt.conf")
        self.broken_pid = j("dns-broken.pid")
        self.broken_log = j("dns-broken.log")
        self.env = j("env")
        self.json = j("peers.json")
        self.master_pid = os.path.join(self.spool, "pid", "master.pid")

    def generated(self):
        """Everything start() creates (removed on rebuild; never DIR itself)."""
        return [self.certs, self.postfix, self.spool, self.data, self.mail,
                self.postfix_log, self.dnsmasq_pid, self.dnsmasq_log,
                self.dnsmasq_conf, self.alt_pid, self.alt_log, self.alt_conf,
                self.broken_pid, self.broken_log, self.env, self.json]


# --------------------------------------------------------------------------
# ports

def smtp_port_free(port):
    addrs = [l[1] for l in LISTENERS] + [DEAD_ADDR, DNS_ADDR]
    return all(bind_ok(a, port, socket.SOCK_STREAM) for a in addrs)


def dns_port_free(port):
    return (bind_ok(DNS_ADDR, port, socket.SOCK_DGRAM)
            and bind_ok(DNS_ADDR, port, socket.SOCK_STREAM))


def choose_ports(smtp_port):
    taken = set()
    if smtp_port is not None:
        if not (1024 < smtp_port < 65536) or smtp_port == 53:
            raise PeerError("--port must be a high port (1025-65535)")
        if not smtp_port_free(smtp_port):
            raise PeerError("port %d is not free on all of 127.0.0.2-11/127.0.0.20"
                            % smtp_port)
        taken.add(smtp_port)
    result = {}
    want = ["smtp", "dns", "dns_alt", "servfail", "timeout"]
    if smtp_port is not None:
        result["smtp"] = smtp_port
        want.remove("smtp")
    candidates = port_candidates()     # one sequence for all of them
    for name in want:
        for port in candidates:
            if port in taken:
                continue
            ok = smtp_port_free(port) if name == "smtp" else dns_port_free(port)
            # keep the DNS ports off the SMTP port of 127.0.0.1 as well
            if ok and name != "smtp":
                ok = bind_ok(DNS_ADDR, port, socket.SOCK_STREAM)
            if ok:
                taken.add(port)
                result[name] = port
                break
        else:
            raise PeerError("no free port found in %d-%d" % peerlib.PORT_RANGE)
    return result


# --------------------------------------------------------------------------
# certificates: tests/peers/certs.py, the suite's one generator

def build_certs(p, key_type):
    try:
        certs.CertBuilder(p.certs, key_type, "peers").build()
    except certs.OpensslMissing as e:
        raise PeerMissing(str(e)) from None
    except certs.CertError as e:
        raise PeerError(str(e)) from None


# --------------------------------------------------------------------------
# postfix

MASTER_CF_BASE = """\
# generated by peers.py -- private test instance, nothing chrooted
# service    type       private unpriv chroot wakeup maxproc command
postlog      unix-dgram n       -      n      -      1       postlogd
pickup       unix       n       -      n      60     1       pickup
cleanup      unix       n       -      n      -      0       cleanup
qmgr         unix       n       -      n      300    1       qmgr
tlsmgr       unix       -       -      n      1000?  1       tlsmgr
rewrite      unix       -       -      n      -      -       trivial-rewrite
bounce       unix       -       -      n      -      0       bounce
defer        unix       -       -      n      -      0       bounce
trace        unix       -       -      n      -      0       bounce
verify       unix       -       -      n      -      1       verify
flush        unix       n       -      n      1000?  0       flush
proxymap     unix       -       -      n      -      -       proxymap
proxywrite   unix       -       -      n      -      1       proxymap
smtp         unix       -       -      n      -      -       smtp
relay        unix       -       -      n      -      -       smtp
showq        unix       n       -      n      -      -       showq
error        unix       -       -      n      -      -       error
retry        unix       -       -      n      -      -       error
discard      unix       -       -      n      -      -       discard
local        unix       -       n      n      -      -       local
virtual      unix       -       n      n      -      -       virtual
lmtp         unix       -       -      n      -      -       lmtp
anvil        unix       -       -      n      -      1       anvil
scache       unix       -       -      n      -      1       scache
"""

MAIN_CF = """\
# generated by peers.py -- private test instance
compatibility_level = 3.6
config_directory = {p.postfix}
queue_directory = {p.spool}
data_directory = {p.data}
maillog_file = {p.postfix_log}
maillog_file_prefixes = {p.dir}
inet_interfaces = loopback-only
inet_protocols = ipv4
myhostname = peers.tm.test
mydomain = tm.test
myorigin = $mydomain
mydestination =
relay_domains =
mynetworks = 127.0.0.0/8
alias_maps =
alias_database =
biff = no

# no DNS, no waiting
smtpd_peername_lookup = no
smtp_dns_support_level = disabled
smtp_host_lookup = native
lmtp_host_lookup = native
in_flow_delay = 0
smtpd_error_sleep_time = 0
smtpd_soft_error_limit = 1000
smtpd_hard_error_limit = 1000
smtpd_junk_command_limit = 1000
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
qmgr_message_active_limit = 20000
smtputf8_enable = yes

# size: tests send 50 MiB
message_size_limit = 104857600
mailbox_size_limit = 0
virtual_mailbox_limit = 0

# restrictions
smtpd_delay_reject = yes
smtpd_helo_required = no
smtpd_client_restrictions =
smtpd_helo_restrictions =
smtpd_sender_restrictions =
smtpd_relay_restrictions = permit_mynetworks, permit_auth_destination, reject
smtpd_recipient_restrictions = check_recipient_access regexp:{p.postfix}/recipient_access
smtpd_data_restrictions =

# every domain is a virtual mailbox domain; virtual(8) itself refuses $1
# substitution in virtual_mailbox_maps, so the mail goes to a pipe(8)
# transport that writes Maildir {p.mail}/<domain>/<localpart>/
virtual_mailbox_domains = static:all
virtual_mailbox_maps = regexp:{p.postfix}/virtual_mailbox
virtual_transport = tmdeliver
tmdeliver_destination_recipient_limit = 1
tmdeliver_destination_concurrency_limit = 50
default_process_limit = 200

# TLS (enabled per listener in master.cf)
smtpd_tls_security_level = none
smtpd_tls_loglevel = 1
smtpd_tls_received_header = yes
"""

REFUSE_STARTTLS = """\
# generated by peers.py: STARTTLS becomes an unknown command (500)
/^STARTTLS( .*)?$/    XSTARTTLS
"""

RECIPIENT_ACCESS = """\
# generated by peers.py
/^"?reject[^@]*@/    550 5.1.1 rejected for test
/^"?defer[^@]*@/     450 4.2.0 deferred for test
"""

# Recipient validation only (no substitution): refuse '/' and leading dots so
# that the Maildir path cannot escape DIR/mail.  The delimiter is '%' because
# '/' occurs in the pattern (and a leading '!' would mean "negate").
VIRTUAL_MAILBOX = """\
# generated by peers.py
%^[^/@.][^/@]*@[^/@.][^/@]*$%    ok
"""

# pipe(8) command: stdin -> DIR/mail/<domain>/<localpart>/{tmp,new}
DELIVER_PY = """\
import os, sys, time, socket
EX_NOUSER, EX_TEMPFAIL = 67, 75
def main():
    os.umask(0o022)
    base, domain, local = sys.argv[1], sys.argv[2], sys.argv[3]
    for part in (domain, local):
        if not part or part.startswith(".") or "/" in part or "\\0" in part:
            sys.stderr.write("bad address part %r\\n" % part)
            return EX_NOUSER
    box = os.path.join(base, domain.lower(), local)     # local part keeps its case
    name = "%d.P%dR%s.%s" % (time.time_ns(), os.getpid(), os.urandom(6).hex(),
                            socket.gethostname().replace("/", "_").replace(":", "_"))
    try:
        for sub in ("tmp", "new", "cur"):
            os.makedirs(os.path.join(box, sub), mode=0o755, exist_ok=True)
        tmp = os.path.join(box, "tmp", name)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "wb") as out:
            while True:
                chunk = sys.stdin.buffer.read(1 << 20)
                if not chunk:
                    break
                out.write(chunk)
        os.rename(tmp, os.path.join(box, "new", name))
    except OSError as e:
        sys.stderr.write("maildir delivery to %s failed: %s\\n" % (box, e))
        return EX_TEMPFAIL
    return 0
sys.exit(main())
"""


def build_postfix(p, smtp_port):
    if not which("postfix"):
        raise PeerMissing("peer missing: postfix (Debian package postfix)")
    try:
        pw = pwd.getpwnam("nobody")
        uid, gid = pw.pw_uid, pw.pw_gid
        pf_uid = pwd.getpwnam("postfix").pw_uid
        pf_gid = grp.getgrnam("postfix").gr_gid
    except KeyError as e:
        raise PeerMissing("peer missing: user/group %s (is postfix installed?)" % e)
    os.makedirs(p.postfix)
    os.makedirs(p.spool)
    os.makedirs(p.data)
    os.makedirs(p.mail)
    os.chown(p.data, pf_uid, pf_gid)
    os.chmod(p.data, 0o700)
    # the queue directories as listed in /etc/postfix/postfix-files; creating
    # them here saves ~2 s of "post-install create-missing" in "postfix start"
    try:
        postdrop_gid = grp.getgrnam("postdrop").gr_gid
    except KeyError:
        postdrop_gid = None
    os.chmod(p.spool, 0o755)
    for sub in ("active", "bounce", "corrupt", "defer", "deferred", "flush", "hold",
                "incoming", "private", "saved", "trace", "maildrop", "public", "pid"):
        d = os.path.join(p.spool, sub)
        os.mkdir(d)
        if sub == "pid":
            os.chmod(d, 0o755)
        elif sub in ("maildrop", "public"):
            if postdrop_gid is None:
                continue            # let postfix create it
            os.chown(d, pf_uid, postdrop_gid)
            os.chmod(d, 0o730 if sub == "maildrop" else 0o710)
        else:
            os.chown(d, pf_uid, 0)
            os.chmod(d, 0o700)
    os.chown(p.mail, uid, gid)
    os.chmod(p.mail, 0o755)
    with open(os.path.join(p.postfix, "main.cf"), "w") as fp:
        fp.write(MAIN_CF.format(p=p))
    with open(os.path.join(p.postfix, "recipient_access"), "w") as fp:
        fp.write(RECIPIENT_ACCESS)
    with open(os.path.join(p.postfix, "refuse_starttls"), "w") as fp:
        fp.write(REFUSE_STARTTLS)
    with open(os.path.join(p.postfix, "virtual_mailbox"), "w") as fp:
        fp.write(VIRTUAL_MAILBOX)
    with open(os.path.join(p.postfix, "deliver.py"), "w") as fp:
        fp.write(DELIVER_PY)
    lines = [MASTER_CF_BASE]
    lines.append("tmdeliver unix - n n - - pipe\n"
                 "  flags=DR user=nobody argv=/usr/bin/python3 -I -S %s %s ${domain} ${mailbox}\n"
                 % (os.path.join(p.postfix, "deliver.py"), p.mail))
    for key, addr, host, level, cert in LISTENERS:
        lines.append("%s:%d inet n - n - - smtpd\n" % (addr, smtp_port))
        lines.append("  -o syslog_name=postfix/%s\n" % host)
        lines.append("  -o myhostname=%s\n" % host)
        lines.append("  -o smtpd_tls_security_level=%s\n" % level)
        if cert:
            certfile = CHAIN_FILES.get(cert, cert + ".pem")
            lines.append("  -o smtpd_tls_cert_file=%s\n" % os.path.join(p.certs, certfile))
            lines.append("  -o smtpd_tls_key_file=%s\n" % os.path.join(p.certs, cert + ".key"))
        for opt in LISTENER_OPTIONS.get(key, []):
            lines.append("  -o %s\n" % opt.format(p=p))
    with open(os.path.join(p.postfix, "master.cf"), "w") as fp:
        fp.write("".join(lines))


def postfix_env(p):
    env = dict(os.environ)
    env["MAIL_CONFIG"] = p.postfix
    env["PATH"] = SBIN_PATH + ":" + env.get("PATH", "")
    return env


def postfix_log_tail(p, n=15):
    try:
        with open(p.postfix_log, errors="replace") as fp:
            return "".join(fp.readlines()[-n:])
    except OSError:
        return ""


def start_postfix(p, direct=False):
    # "postfix start" runs the checks of "postfix check" and creates the queue
    # directories itself; a separate "postfix check" would cost ~2.5 s more.
    # Its shell scripts (postfix-script, post-install) still take 1-2 s; with
    # direct=True we start master(8) the way postfix-script does in the end
    # ("master -w": returns once the master is initialized), ~0.1 s.
    if direct:
        master = "/usr/lib/postfix/sbin/master"
        if not os.access(master, os.X_OK):
            rc, out = run_cmd(["postconf", "-c", p.postfix, "-h", "daemon_directory"],
                              env=postfix_env(p))
            master = os.path.join(out.strip(), "master")
        argv = [master, "-c", p.postfix, "-w"]
    else:
        argv = ["postfix", "-c", p.postfix, "start"]
    rc, out = run_tty(argv, timeout=60, env=postfix_env(p))
    if rc != 0:
        raise PeerError("postfix start failed (rc %d):\n%s\n--- %s:\n%s"
                        % (rc, out.strip(), p.postfix_log, postfix_log_tail(p)))
    warnings = [l for l in out.splitlines() if "warning" in l or "fatal" in l]
    for w in warnings:
        log("postfix: " + w.strip())


def our_postfix_pids(p):
    """Pids of Postfix processes whose MAIL_CONFIG is our config directory."""
    want = ("MAIL_CONFIG=" + p.postfix).encode()
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        pid = int(name)
        if pid == os.getpid():
            continue
        try:
            exe = os.readlink("/proc/%d/exe" % pid)
        except OSError:
            continue
        if not exe.startswith("/usr/lib/postfix/"):
            continue
        if want in proc_list(pid, "environ") and pid_alive(pid):
            pids.append(pid)
    return pids


def stop_postfix(p):
    master = read_pidfile(p.master_pid)
    running = master is not None and pid_alive(master)
    if os.path.exists(os.path.join(p.postfix, "main.cf")) and running and which("postfix"):
        try:
            rc, out = run_tty(["postfix", "-c", p.postfix, "stop"], timeout=30,
                              env=postfix_env(p))
            if rc != 0:
                log("postfix stop: rc %d: %s" % (rc, out.strip()))
        except PeerError as e:
            log(str(e))
    if master is not None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and pid_alive(master):
            time.sleep(0.02)
    # leftovers (e.g. stop failed): only processes carrying our MAIL_CONFIG
    for pid in our_postfix_pids(p):
        kill_pid(pid, "postfix process")


# --------------------------------------------------------------------------
# dnsmasq

# sts.test: MTA-STS (RFC 8461) domains for tests/sts/test_sts_postfix.c,
# whose MX records point at the listeners above.  Per domain: its MX hosts
# (tm.test names), the id of its "v=STSv1; id=ID;" TXT record at
# _mta-sts.<domain> (None: no record), the id the second dnsmasq
# (TM_TEST_DNS_ALT) serves instead ("same": the same record), and whether
# mta-sts.<domain> has an A record (STS_HTTPS_ADDR, where sts_https.py
# listens; the test sets the port).  The policies themselves are the test's
# (sts_https.py's policy directory); the names that the `sts` certificate
# carries are certs.STS_TEST_DOMAINS.
STS_ZONE = "sts.test"
STS_DOMAINS = [
    # domain       MX hosts (preference 10, 20, ...)          TXT id   alt id   A
    ("enforce",    ["mx-valid"],                              "e1",    "same",  True),
    ("skip",       ["mx-chain", "mx-valid"],                  "s1",    "same",  True),
    ("wild",       ["mx.wild", "mx-valid"],                   "w1",    "same",  True),
    ("wildskip",   ["mx.wild", "mx-valid"],                   "ws1",   "same",  True),
    ("badfirst",   ["mx-selfsigned", "mx-valid"],             "bf1",   "same",  True),
    ("wrongname",  ["mx-wrongname"],                          "wn1",   "same",  True),
    ("selfsigned", ["mx-selfsigned"],                         "ss1",   "same",  True),
    ("plain",      ["mx-plain"],                              "p1",    "same",  True),
    ("refused",    ["mx-refusetls"],                          "r1",    "same",  True),
    ("nomatch",    ["mx-valid"],                              "nm1",   "same",  True),
    ("testing",    ["mx-valid"],                              "t1",    "same",  True),
    ("twrongname", ["mx-wrongname"],                          "twn1",  "same",  True),
    ("tplain",     ["mx-plain"],                              "tp1",   "same",  True),
    ("trefused",   ["mx-refusetls"],                          "tr1",   "same",  True),
    ("tnomatch",   ["mx-valid"],                              "tnm1",  "same",  True),
    ("none",       ["mx-selfsigned"],                         "n1",    "same",  True),
    ("notxt",      ["mx-selfsigned"],                         None,    "same",  True),
    ("notfound",   ["mx-selfsigned"],                         "nf1",   "same",  True),
    ("redirect",   ["mx-selfsigned"],                         "rd1",   "same",  True),
    ("html",       ["mx-selfsigned"],                         "h1",    "same",  True),
    ("big",        ["mx-selfsigned"],                         "bg1",   "same",  True),
    ("badsyntax",  ["mx-selfsigned"],                         "bs1",   "same",  True),
    ("tlsfail",    ["mx-selfsigned"],                         "tf1",   "same",  True),
    ("noaddr",     ["mx-valid"],                              "na1",   "same",  False),
    ("blocked",    ["mx-selfsigned"],                         "b1",    "b2",    True),
    ("vanish",     ["mx-selfsigned"],                         "v1",    None,    True),
    ("newid",      ["mx-selfsigned"],                         "n1",    "n2",    True),
    ("expire",     ["mx-selfsigned"],                         None,    "same",  True),
    ("shortlived", ["mx-valid"],                              "sl1",   "same",  True),
    ("callback",   ["mx-valid"],                              "cb1",   "same",  True),
    ("slow",       ["mx-valid"],                              "sw1",   "same",  True),
]


def sts_records(alt):
    """dnsmasq options for sts.test; alt: the second instance's records."""
    o = ["local=/%s/" % STS_ZONE]
    for name, mxs, txt, alt_txt, has_a in STS_DOMAINS:
        domain = "%s.%s" % (name, STS_ZONE)
        if (txt or alt_txt not in ("same", None)) and has_a and name != "tlsfail" \
                and name not in certs.STS_TEST_DOMAINS:
            raise PeerError("mta-sts.%s is not in certs.STS_TEST_DOMAINS" % domain)
        for i, mx in enumerate(mxs):
            o.append("mx-host=%s,%s.tm.test,%d" % (domain, mx, 10 * (i + 1)))
        if alt and alt_txt != "same":
            txt = alt_txt
        if txt:
            o.append('txt-record=_mta-sts.%s,"v=STSv1; id=%s;"' % (domain, txt))
        if has_a:
            o.append("host-record=mta-sts.%s,%s" % (domain, STS_HTTPS_ADDR))
    return o


def dnsmasq_options(p, port, alt=False):
    o = [
        "port=%d" % port,
        "listen-address=%s" % DNS_ADDR,
        "bind-interfaces",
        "no-resolv",
        "no-hosts",
        "no-poll",
        "no-negcache",
        "local=/tm.test/",
        "pid-file=%s" % (p.alt_pid if alt else p.dnsmasq_pid),
        "log-facility=%s" % (p.alt_log if alt else p.dnsmasq_log),
        "log-queries",
    ]
    hosts = {host: addr for _, addr, host, _, _ in LISTENERS}
    for host, addr in sorted(hosts.items()):
        o.append("host-record=%s,%s" % (host, addr))
    o += [
        "host-record=mx-ipv6.tm.test,::1",
        "host-record=mx-both.tm.test,127.0.0.2,::1",
        "host-record=mx-dead.tm.test,%s" % DEAD_ADDR,
        "host-record=mx-zero.tm.test,0.0.0.0",
        "txt-record=mx-noaddr.tm.test,\"no address here\"",
        "host-record=implicit.tm.test,127.0.0.2",
        "cname=alias.tm.test,mx-valid.tm.test",
        "mx-host=multi.tm.test,mx-dead.tm.test,5",
        "mx-host=multi.tm.test,mx-valid.tm.test,10",
        "mx-host=multi.tm.test,mx-plain.tm.test,20",
        "mx-host=equal.tm.test,mx-valid.tm.test,10",
        "mx-host=equal.tm.test,mx.wild.tm.test,10",
        "mx-host=valid.tm.test,mx-valid.tm.test,10",
        "mx-host=plain.tm.test,mx-plain.tm.test,10",
        "mx-host=badcert.tm.test,mx-selfsigned.tm.test,10",
        "mx-host=badcert.tm.test,mx-valid.tm.test,20",
        "mx-host=plainfirst.tm.test,mx-plain.tm.test,10",
        "mx-host=plainfirst.tm.test,mx-valid.tm.test,20",
        # null MX (RFC 7505): MX 0 "."  -- raw RR type 15, rdata 00 00 00
        "dns-rr=nullmx.tm.test,15,000000",
        "mx-host=cname.tm.test,alias.tm.test,10",
        "mx-host=noaddr.tm.test,mx-noaddr.tm.test,10",
        "mx-host=noaddr.tm.test,mx-valid.tm.test,20",
        "mx-host=zero.tm.test,mx-zero.tm.test,10",
        "mx-host=zero.tm.test,mx-valid.tm.test,20",
    ]
    return o + sts_records(alt)


def start_dnsmasq(p, port, alt=False):
    prog = which("dnsmasq")
    if not prog:
        raise PeerMissing("peer missing: dnsmasq (Debian package dnsmasq-base)")
    conf, pidfile = (p.alt_conf, p.alt_pid) if alt else (p.dnsmasq_conf, p.dnsmasq_pid)
    with open(conf, "w") as fp:
        fp.write("# generated by peers.py\n")
        fp.write("\n".join(dnsmasq_options(p, port, alt)) + "\n")
    # dnsmasq daemonizes; the parent reports start-up errors and exits
    rc, out = run_cmd([prog, "--conf-file=" + conf], timeout=20)
    if rc != 0:
        raise PeerError("dnsmasq failed to start (rc %d): %s" % (rc, out.strip()))
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        pid = read_pidfile(pidfile)
        if pid and pid_alive(pid):
            return pid
        time.sleep(0.02)
    raise PeerError("dnsmasq did not write %s" % pidfile)


# --------------------------------------------------------------------------
# DNS wire format (client + the broken responder)

def dns_query(server, port, name, qtype, timeout=1.0, tries=2, tcp=False):
    """Returns (rcode_name, answers) with answers = [(name, type, data)]."""
    qt = TYPES[qtype.upper()] if isinstance(qtype, str) else qtype
    for attempt in range(tries):
        qid = random.getrandbits(16)
        q = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + encode_name(name) + \
            struct.pack("!HH", qt, 1)
        try:
            if tcp:
                with socket.create_connection((server, port), timeout=timeout) as s:
                    s.sendall(struct.pack("!H", len(q)) + q)
                    buf = b""
                    deadline = time.monotonic() + timeout
                    while time.monotonic() < deadline:
                        chunk = s.recv(65535)
                        if not chunk:
                            break
                        buf += chunk
                        if len(buf) >= 2 and len(buf) >= 2 + struct.unpack("!H", buf[:2])[0]:
                            break
                    msg = buf[2:]
            else:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                    s.settimeout(timeout)
                    s.sendto(q, (server, port))
                    while True:
                        msg, _ = s.recvfrom(65535)
                        if len(msg) >= 2 and struct.unpack("!H", msg[:2])[0] == qid:
                            break
        except (socket.timeout, ConnectionRefusedError, OSError):
            if attempt + 1 == tries:
                raise
            continue
        return parse_response(msg)
    raise OSError("no answer")


def parse_response(msg):
    qid, flags, qd, an, ns, ar = struct.unpack("!HHHHHH", msg[:12])
    rcode = RCODES.get(flags & 0xF, str(flags & 0xF))
    off = 12
    for _ in range(qd):
        _, off = decode_name(msg, off)
        off += 4
    answers = []
    for _ in range(an):
        rname, off = decode_name(msg, off)
        rtype, rclass, ttl, rdlen = struct.unpack("!HHIH", msg[off:off + 10])
        off += 10
        rdata = msg[off:off + rdlen]
        if rtype == 1 and rdlen == 4:
            data = socket.inet_ntop(socket.AF_INET, rdata)
        elif rtype == 28 and rdlen == 16:
            data = socket.inet_ntop(socket.AF_INET6, rdata)
        elif rtype == 15:
            pref = struct.unpack("!H", rdata[:2])[0]
            data = (pref, decode_name(msg, off + 2)[0] or ".")
        elif rtype in (2, 5, 12):
            data = decode_name(msg, off)[0]
        elif rtype == 16:
            parts, i = [], 0
            while i < rdlen:
                n = rdata[i]
                parts.append(rdata[i + 1:i + 1 + n].decode("utf-8", "replace"))
                i += 1 + n
            data = "".join(parts)
        else:
            data = rdata.hex()
        answers.append((rname, TYPE_NAMES.get(rtype, str(rtype)), data))
        off += rdlen
    return rcode, answers


def servfail_reply(query):
    if len(query) < 12:
        return None
    qid, flags, qd = struct.unpack("!HHH", query[:6])
    if flags & 0x8000:
        return None                     # a response, not a query
    question = b""
    if qd == 1:
        off = 12
        try:
            for _ in range(128):
                n = query[off]
                if n == 0:
                    off += 1
                    break
                if n & 0xC0:
                    raise IndexError
                off += 1 + n
            question = query[12:off + 4] if off + 4 <= len(query) else b""
        except IndexError:
            question = b""
    rflags = 0x8000 | (flags & 0x7900) | 0x0080 | 2    # QR, opcode+RD, RA, SERVFAIL
    return struct.pack("!HHHHHH", qid, rflags, 1 if question else 0, 0, 0, 0) + question


def broken_dns_main(args):
    """Child process: SERVFAIL on --servfail-port (UDP+TCP), silence on --timeout-port."""
    deadline = time.monotonic() + min(args.lifetime, BROKEN_DNS_LIFETIME)
    stop = [False]

    def on_term(signum, frame):
        stop[0] = True
        raise KeyboardInterrupt      # interrupt select() at once
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)

    sel = selectors.DefaultSelector()

    def sock(kind, port):
        s = socket.socket(socket.AF_INET, kind)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((DNS_ADDR, port))
        if kind == socket.SOCK_STREAM:
            s.listen(16)
        s.setblocking(False)
        return s

    sf_udp = sock(socket.SOCK_DGRAM, args.servfail_port)
    sf_tcp = sock(socket.SOCK_STREAM, args.servfail_port)
    to_udp = sock(socket.SOCK_DGRAM, args.timeout_port)   # bound, never read
    to_tcp = sock(socket.SOCK_STREAM, args.timeout_port)  # accepted, never answered
    sel.register(sf_udp, selectors.EVENT_READ, "sf_udp")
    sel.register(sf_tcp, selectors.EVENT_READ, "sf_tcp")
    sel.register(to_tcp, selectors.EVENT_READ, "to_tcp")
    conns = {}          # socket -> (kind, expiry, buffer)
    MAX_CONNS = 64

    with open(args.pidfile + ".tmp", "w") as fp:
        fp.write("%d\n" % os.getpid())
    os.rename(args.pidfile + ".tmp", args.pidfile)
    print("dns-broken: pid %d servfail=%s:%d timeout=%s:%d" % (
        os.getpid(), DNS_ADDR, args.servfail_port, DNS_ADDR, args.timeout_port), flush=True)

    def drop(c):
        try:
            sel.unregister(c)
        except (KeyError, ValueError):
            pass
        c.close()
        conns.pop(c, None)

    try:
        while not stop[0] and time.monotonic() < deadline:
            now = time.monotonic()
            for c, (kind, expiry, _) in list(conns.items()):
                if now >= expiry:
                    drop(c)
            for key, _ in sel.select(timeout=1.0):
                tag = key.data
                s = key.fileobj
                try:
                    if tag == "sf_udp":
                        for _ in range(64):
                            try:
                                q, addr = s.recvfrom(65535)
                            except BlockingIOError:
                                break
                            r = servfail_reply(q)
                            if r:
                                s.sendto(r, addr)
                    elif tag in ("sf_tcp", "to_tcp"):
                        try:
                            c, _ = s.accept()
                        except BlockingIOError:
                            continue
                        if len(conns) >= MAX_CONNS:
                            c.close()
                            continue
                        c.setblocking(False)
                        if tag == "sf_tcp":
                            conns[c] = ("sf", time.monotonic() + 10, b"")
                            sel.register(c, selectors.EVENT_READ, "sf_conn")
                        else:
                            conns[c] = ("to", time.monotonic() + 60, b"")
                    elif tag == "sf_conn":
                        data = s.recv(65535)
                        if not data:
                            drop(s)
                            continue
                        kind, expiry, buf = conns[s]
                        buf += data
                        while len(buf) >= 2:
                            n = struct.unpack("!H", buf[:2])[0]
                            if len(buf) < 2 + n:
                                break
                            r = servfail_reply(buf[2:2 + n])
                            buf = buf[2 + n:]
                            if r:
                                s.setblocking(True)
                                s.settimeout(2)
                                s.sendall(struct.pack("!H", len(r)) + r)
                                s.setblocking(False)
                        if len(buf) > 70000:
                            drop(s)
                            continue
                        conns[s] = (kind, expiry, buf)
                except OSError:
                    if tag == "sf_conn":
                        drop(s)
    except KeyboardInterrupt:
        pass
    for c in list(conns):
        drop(c)
    for s in (sf_udp, sf_tcp, to_udp, to_tcp):
        s.close()
    try:
        if read_pidfile(args.pidfile) == os.getpid():
            os.unlink(args.pidfile)
    except OSError:
        pass
    return 0


def start_broken_dns(p, servfail_port, timeout_port):
    logf = open(p.broken_log, "w")
    try:
        proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "dns-broken",
             "--dir", p.dir, "--pidfile", p.broken_pid,
             "--servfail-port", str(servfail_port), "--timeout-port", str(timeout_port)],
            stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
            start_new_session=True, close_fds=True)
    finally:
        logf.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            with open(p.broken_log, errors="replace") as fp:
                raise PeerError("broken-DNS responder exited (rc %s):\n%s"
                                % (proc.returncode, fp.read()[-2000:]))
        if read_pidfile(p.broken_pid) == proc.pid:
            return proc.pid
        time.sleep(0.02)
    raise PeerError("broken-DNS responder did not start")


# --------------------------------------------------------------------------
# readiness

def smtp_greeting(addr, port, timeout=2.0):
    with socket.create_connection((addr, port), timeout=timeout) as s:
        buf = b""
        deadline = time.monotonic() + timeout
        while b"\n" not in buf and time.monotonic() < deadline:
            chunk = s.recv(4096)
            if not chunk:
                break
            buf += chunk
        try:
            s.sendall(b"QUIT\r\n")
        except OSError:
            pass
        return buf.decode("utf-8", "replace").strip()


def wait_ready(p, ports):
    deadline = time.monotonic() + READY_TIMEOUT
    pending = {l[0]: l for l in LISTENERS}
    last = {}
    dns_ok = alt_ok = servfail_ok = False
    while time.monotonic() < deadline:
        for key, (k, addr, host, _, _) in list(pending.items()):
            try:
                g = smtp_greeting(addr, ports["smtp"])
            except OSError as e:
                last[key] = "%s:%d: %s" % (addr, ports["smtp"], e)
                continue
            if g.startswith("220 " + host + " ") or g == "220 " + host:
                del pending[key]
            else:
                last[key] = "%s:%d: unexpected greeting %r" % (addr, ports["smtp"], g)
        if not dns_ok:
            try:
                rc, ans = dns_query(DNS_ADDR, ports["dns"], "valid.tm.test", "MX",
                                    timeout=0.5, tries=1)
                if rc == "NOERROR" and ("valid.tm.test", "MX", (10, "mx-valid.tm.test")) in ans:
                    dns_ok = True
                else:
                    last["dns"] = "MX valid.tm.test: %s %r" % (rc, ans)
            except OSError as e:
                last["dns"] = "dnsmasq %s:%d: %s" % (DNS_ADDR, ports["dns"], e)
        if not alt_ok:
            try:
                rc, ans = dns_query(DNS_ADDR, ports["dns_alt"], "valid.tm.test", "MX",
                                    timeout=0.5, tries=1)
                alt_ok = rc == "NOERROR" and len(ans) == 1
                if not alt_ok:
                    last["dns_alt"] = "second dnsmasq: MX valid.tm.test: %s %r" % (rc, ans)
            except OSError as e:
                last["dns_alt"] = "second dnsmasq %s:%d: %s" % (DNS_ADDR, ports["dns_alt"], e)
        if not servfail_ok:
            try:
                rc, _ = dns_query(DNS_ADDR, ports["servfail"], "valid.tm.test", "MX",
                                  timeout=0.5, tries=1)
                servfail_ok = rc == "SERVFAIL"
                if not servfail_ok:
                    last["servfail"] = "servfail port answered %s" % rc
            except OSError as e:
                last["servfail"] = "servfail port %d: %s" % (ports["servfail"], e)
        if not pending and dns_ok and alt_ok and servfail_ok:
            return
        time.sleep(0.05)
    problems = [v for k, v in last.items()
                if k in pending or (k == "dns" and not dns_ok)
                or (k == "dns_alt" and not alt_ok) or (k == "servfail" and not servfail_ok)]
    raise PeerError("peers not ready after %.0fs:\n  %s\n--- %s:\n%s"
                    % (READY_TIMEOUT, "\n  ".join(problems), p.postfix_log,
                       postfix_log_tail(p)))


def sts_txt(server_port, domain):
    """(rcode, [TXT strings]) of _mta-sts.<domain> at DNS_ADDR:server_port."""
    rc, ans = dns_query(DNS_ADDR, server_port, "_mta-sts." + domain, "TXT", timeout=1.0)
    return rc, sorted(d for (_, t, d) in ans if t == "TXT")


def verify_dns(port, alt_port):
    """Check the zone really is what the tests expect (cheap, ~1 ms/query)."""
    checks = [
        ("nullmx.tm.test", "MX", [(0, ".")]),
        ("multi.tm.test", "MX", [(5, "mx-dead.tm.test"), (10, "mx-valid.tm.test"),
                                 (20, "mx-plain.tm.test")]),
        ("mx-both.tm.test", "AAAA", ["::1"]),
        ("implicit.tm.test", "A", ["127.0.0.2"]),
        ("mx-zero.tm.test", "A", ["0.0.0.0"]),
    ]
    errors = []
    for name, qt, want in checks:
        rc, ans = dns_query(DNS_ADDR, port, name, qt, timeout=1.0)
        got = sorted(d for (n, t, d) in ans if t == qt)
        if rc != "NOERROR" or got != sorted(want):
            errors.append("%s %s: %s %r (want %r)" % (name, qt, rc, got, want))
    rc, ans = dns_query(DNS_ADDR, port, "nosuch.tm.test", "MX", timeout=1.0)
    if rc != "NXDOMAIN":
        errors.append("nosuch.tm.test MX: %s (want NXDOMAIN)" % rc)
    # sts.test: one record that both servers share, the ones that differ
    for srv, domain, want in ((port, "enforce.sts.test", ["v=STSv1; id=e1;"]),
                              (alt_port, "enforce.sts.test", ["v=STSv1; id=e1;"]),
                              (port, "newid.sts.test", ["v=STSv1; id=n1;"]),
                              (alt_port, "newid.sts.test", ["v=STSv1; id=n2;"]),
                              (port, "vanish.sts.test", ["v=STSv1; id=v1;"]),
                              (alt_port, "vanish.sts.test", [])):
        rc, got = sts_txt(srv, domain)
        if rc != ("NOERROR" if want else "NXDOMAIN") or got != want:
            errors.append("TXT _mta-sts.%s at port %d: %s %r (want %r)"
                          % (domain, srv, rc, got, want))
    if errors:
        raise PeerError("dnsmasq answers unexpectedly:\n  " + "\n  ".join(errors))


# --------------------------------------------------------------------------
# commands

def check_dir(p):
    if re.search(r"[\s,={}]", p.dir):
        raise PeerError("--dir must not contain whitespace, ',', '=', '{' or '}': %r" % p.dir)
    # the postfix daemons and the virtual delivery agent (uid nobody) must be
    # able to traverse every ancestor of DIR
    d = os.path.dirname(p.dir)
    while True:
        try:
            st = os.stat(d)
        except FileNotFoundError:
            pass
        else:
            if not st.st_mode & 0o001:
                raise PeerError("%s is not searchable by others (mode %o); the postfix "
                                "daemons cannot reach %s -- use a directory under e.g. "
                                "/tmp or the build tree" % (d, st.st_mode & 0o7777, p.dir))
        if d == "/":
            break
        d = os.path.dirname(d)


def check_prereqs():
    missing = []
    for prog, pkg in (("postfix", "postfix"), ("dnsmasq", "dnsmasq-base"),
                      ("openssl", "openssl")):
        if not which(prog):
            missing.append("%s (Debian package %s)" % (prog, pkg))
    if not os.path.exists("/usr/lib/postfix/sbin/virtual") and which("postfix"):
        missing.append("postfix virtual(8) delivery agent")
    if missing:
        raise PeerMissing("peer missing: " + ", ".join(missing))
    if os.geteuid() != 0:
        raise PeerMissing("peer missing: root privileges (the private Postfix "
                          "instance must be started as root)")


def stop_all(p):
    stop_by_pidfile(p.broken_pid, "dns-broken", "broken-DNS responder")
    stop_by_pidfile(p.dnsmasq_pid, p.dir, "dnsmasq")
    stop_by_pidfile(p.alt_pid, p.dir, "second dnsmasq")
    stop_postfix(p)
    for f in (p.broken_pid, p.dnsmasq_pid, p.alt_pid):
        try:
            os.unlink(f)
        except OSError:
            pass


def clean(p):
    remove_paths(p.generated())


def do_start(dirname, port, key_type, direct_master=False):
    t0 = time.monotonic()
    p = Paths(dirname)
    check_prereqs()
    check_dir(p)
    os.makedirs(p.dir, exist_ok=True)
    os.chmod(p.dir, 0o755)
    stop_all(p)                       # stale processes from an earlier run
    clean(p)
    t_certs0 = time.monotonic()
    try:
        build_certs(p, key_type)
    except BaseException:
        clean(p)
        raise
    t_certs = time.monotonic() - t_certs0
    # Other instances (parallel test runs) may grab a port between our probe
    # and the real bind: with automatic ports, retry with fresh ones.
    attempts = 1 if port is not None else 3
    for attempt in range(attempts):
        try:
            ports = choose_ports(port)
            build_postfix(p, ports["smtp"])
            start_broken_dns(p, ports["servfail"], ports["timeout"])
            start_dnsmasq(p, ports["dns"])
            start_dnsmasq(p, ports["dns_alt"], alt=True)
            start_postfix(p, direct_master)
            wait_ready(p, ports)
            verify_dns(ports["dns"], ports["dns_alt"])
            break
        except PeerError as e:
            stop_all(p)
            # master(8) cannot report a failed bind (no log service yet):
            # probe the ports ourselves once ours are stopped
            if "ports" in locals() and "in use" not in str(e):
                busy = []
                if not smtp_port_free(ports["smtp"]):
                    busy.append("SMTP port %d" % ports["smtp"])
                for k in ("dns", "dns_alt", "servfail", "timeout"):
                    if not dns_port_free(ports[k]):
                        busy.append("%s port %d" % (k, ports[k]))
                if busy:
                    e = PeerError("%s in use by another process\n%s" % (", ".join(busy), e))
            if attempt + 1 < attempts and "in use" in str(e):
                log("port collision (%s), retrying with other ports"
                    % str(e).strip().splitlines()[0][:200])
                remove_paths((p.postfix, p.spool, p.data, p.mail, p.postfix_log,
                              p.dnsmasq_log, p.dnsmasq_conf, p.alt_log, p.alt_conf,
                              p.broken_log))
                continue
            raise e
        except BaseException:
            stop_all(p)
            raise
    env = {
        "TM_PEERS_DIR": p.dir,
        "TM_TEST_PORT": str(ports["smtp"]),
        "TM_TEST_CA": os.path.join(p.certs, "ca.pem"),
        "TM_TEST_CERTDIR": p.certs,
        "TM_TEST_MAILDIR": p.mail,
        "TM_TEST_DNS": "%s:%d" % (DNS_ADDR, ports["dns"]),
        "TM_TEST_DNS_ALT": "%s:%d" % (DNS_ADDR, ports["dns_alt"]),
        "TM_TEST_DNS_SERVFAIL": "%s:%d" % (DNS_ADDR, ports["servfail"]),
        "TM_TEST_DNS_TIMEOUT": "%s:%d" % (DNS_ADDR, ports["timeout"]),
        "TM_TEST_POSTFIX_LOG": p.postfix_log,
        "TM_TEST_MX_DEAD_ADDR": DEAD_ADDR,
    }
    for key, addr, host, _, _ in LISTENERS:
        env["TM_TEST_MX_" + key] = host
        env["TM_TEST_MX_" + key + "_ADDR"] = addr
    write_env(p.env, env)
    write_atomic(p.json, json.dumps(env, indent=2) + "\n")
    log("peers up in %.2fs (certificates %.2fs): SMTP port %d, DNS %s, env in %s"
        % (time.monotonic() - t0, t_certs, ports["smtp"], env["TM_TEST_DNS"], p.env))
    return env


def cmd_start(args):
    return peerlib.start_command(
        lambda: do_start(args.dir, args.port, args.key_type, args.direct_master))


def unlink_env(p):
    try:
        os.unlink(p.env)
    except OSError:
        pass


def cmd_stop(args):
    p = Paths(args.dir)
    stop_all(p)
    unlink_env(p)
    return 0


def cmd_run(args):
    p = Paths(args.dir)

    def stop():
        stop_all(p)
        unlink_env(p)
    return peerlib.run_command(
        args.cmd, lambda: do_start(args.dir, args.port, args.key_type, args.direct_master),
        stop, "peers")


def maildir_for(p, addr):
    if "@" not in addr:
        raise PeerError("--to needs user@domain")
    local, domain = addr.rsplit("@", 1)
    return os.path.join(p.mail, domain.lower(), local)


def find_mail(p, addr):
    if "@" not in addr:
        raise PeerError("--to needs user@domain")
    local, domain = addr.rsplit("@", 1)
    # deliver.py lowercases the domain and keeps the case of the local part
    cands = [os.path.join(p.mail, domain.lower(), local)]
    files = []
    for b in cands:
        for sub in ("new", "cur"):
            d = os.path.join(b, sub)
            try:
                names = os.listdir(d)
            except OSError:
                continue
            files += [os.path.join(d, n) for n in names if not n.startswith(".")]
    files = sorted(set(files), key=lambda f: (os.path.getmtime(f) if os.path.exists(f) else 0, f))
    return files


def cmd_wait_mail(args):
    p = Paths(args.dir)
    deadline = time.monotonic() + args.timeout
    while True:
        files = find_mail(p, args.to)
        if len(files) >= args.count:
            for f in files:
                print(f)
            return 0
        if time.monotonic() >= deadline:
            log("wait-mail: %d of %d message(s) for %s after %.1fs (looked in %s)"
                % (len(files), args.count, args.to, args.timeout, maildir_for(p, args.to)))
            for f in files:
                print(f)
            return 1
        time.sleep(0.05)


def resolve_server(p, spec):
    if spec in (None, "", "dnsmasq", "alt", "broken", "servfail", "timeout"):
        env = read_env(p.env)
        key = {"broken": "TM_TEST_DNS_SERVFAIL", "servfail": "TM_TEST_DNS_SERVFAIL",
               "timeout": "TM_TEST_DNS_TIMEOUT",
               "alt": "TM_TEST_DNS_ALT"}.get(spec, "TM_TEST_DNS")
        spec = env[key]
    host, port = spec.rsplit(":", 1)
    return host, int(port)


def cmd_query(args):
    p = Paths(args.dir)
    host, port = resolve_server(p, args.server)
    try:
        rc, ans = dns_query(host, port, args.name, args.type, timeout=args.timeout,
                            tries=1, tcp=args.tcp)
    except OSError as e:
        print("ERROR %s" % (e or "timeout"))
        return 1
    print(rc)
    for n, t, d in ans:
        if isinstance(d, tuple):
            d = "%d %s" % d
        print("%s\t%s\t%s" % (n, t, d))
    return 0


# --------------------------------------------------------------------------
# selftest: everything the tests rely on, checked end to end

def cmd_selftest(args):
    import smtplib
    import ssl
    p = Paths(args.dir)
    env = read_env(p.env)
    port = int(env["TM_TEST_PORT"])
    dhost, dport = env["TM_TEST_DNS"].rsplit(":", 1)
    dport = int(dport)
    check = peerlib.Checks()

    def ctx():
        c = ssl.create_default_context(cafile=env["TM_TEST_CA"])
        return c

    # TLS verification per listener
    expect = {
        "VALID": None,
        "WILD": None,
        "CHAIN": None,
        "WRONGNAME": "Hostname mismatch",
        "EXPIRED": "certificate has expired",
        "SELFSIGNED": "self-signed certificate",
        "NOTYET": "certificate is not yet valid",
        "DANE_TA": None,
    }
    for key, want in expect.items():
        host, addr = env["TM_TEST_MX_" + key], env["TM_TEST_MX_" + key + "_ADDR"]
        if key == "WILD":
            host = "mx.wild.tm.test"
        try:
            with smtplib.SMTP(addr, port, local_hostname="selftest.tm.test", timeout=10) as s:
                code, _ = s.ehlo()
                has_tls = s.has_extn("starttls")
                _starttls(s, ctx(), host)
                err = None
                s.ehlo()
        except ssl.SSLCertVerificationError as e:
            err = e.verify_message or str(e)
        except (OSError, smtplib.SMTPException) as e:
            err = "other error: %r" % e
        if want is None:
            check(err is None, "%s (%s) verifies with TLS (err=%s)" % (key, host, err))
        else:
            check(err is not None and want in err,
                  "%s (%s) fails verification: %s" % (key, host, err))

    # plain listener: no STARTTLS, extensions present
    with smtplib.SMTP(env["TM_TEST_MX_PLAIN_ADDR"], port, local_hostname="selftest.tm.test",
                      timeout=10) as s:
        code, msg = s.ehlo()
        check(not s.has_extn("starttls"), "PLAIN does not advertise STARTTLS")
    # refusing listener: STARTTLS offered, answered 500, the session goes on
    with smtplib.SMTP(env["TM_TEST_MX_REFUSETLS_ADDR"], port, local_hostname="selftest.tm.test",
                      timeout=10) as s:
        s.ehlo()
        check(s.has_extn("starttls"), "REFUSETLS advertises STARTTLS")
        code, msg = s.docmd("STARTTLS")
        check(code == 500, "REFUSETLS answers STARTTLS with %d %s" % (code, msg.decode()))
        code, msg = s.noop()
        check(code == 250, "REFUSETLS: NOOP after the refusal -> %d" % code)
    with smtplib.SMTP(env["TM_TEST_MX_VALID_ADDR"], port, local_hostname="selftest.tm.test",
                      timeout=10) as s:
        code, msg = s.ehlo()
        for ext in ("starttls", "pipelining", "8bitmime", "smtputf8", "enhancedstatuscodes",
                    "chunking", "size"):
            check(s.has_extn(ext), "VALID advertises %s" % ext.upper())
        check(s.esmtp_features.get("size") == "104857600", "SIZE 104857600 (%s)"
              % s.esmtp_features.get("size"))
        check(msg.decode().startswith("mx-valid.tm.test"), "EHLO reply names mx-valid.tm.test")
        s.mail("sender@example.test")
        code, msg = s.rcpt("rejectme@example.test")
        check(code == 550 and msg.startswith(b"5.1.1 ") and msg.endswith(b"rejected for test"),
              "reject* -> %d %s" % (code, msg.decode()))
        code, msg = s.rcpt("deferme@example.test")
        check(code == 450 and msg.startswith(b"4.2.0 ") and msg.endswith(b"deferred for test"),
              "defer* -> %d %s" % (code, msg.decode()))
        s.rset()

    # delivery over TLS
    tag = "selftest-%d-%d" % (os.getpid(), int(time.time()))
    user = "selftest%d" % random.getrandbits(24)
    rcpt = "%s@example.test" % user
    t0 = time.monotonic()
    with smtplib.SMTP(env["TM_TEST_MX_VALID_ADDR"], port, local_hostname="selftest.tm.test",
                      timeout=10) as s:
        _starttls(s, ctx(), "mx-valid.tm.test")
        s.sendmail("sender@example.test", [rcpt],
                   "From: sender@example.test\r\nTo: %s\r\nSubject: %s\r\n\r\nhello\r\n"
                   % (rcpt, tag))
    t_sent = time.monotonic()
    files = []
    while time.monotonic() - t_sent < 10:
        files = find_mail(p, rcpt)
        if files:
            break
        time.sleep(0.02)
    dt = time.monotonic() - t_sent
    check(bool(files), "message landed in %s after %.3fs (send took %.3fs)"
          % (files[0] if files else maildir_for(p, rcpt), dt, t_sent - t0))
    if files:
        with open(files[0], errors="replace") as fp:
            body = fp.read()
        check(tag in body and "using TLS" in body, "delivered message has the tag and "
              "a Received: ... using TLS header")

    # DNS
    def q(name, qt, server=(dhost, dport)):
        return dns_query(server[0], server[1], name, qt, timeout=2)

    def mx(name):
        rc, ans = q(name, "MX")
        return rc, sorted(d for (_, t, d) in ans if t == "MX")

    dns_expect = [
        ("multi.tm.test", [(5, "mx-dead.tm.test"), (10, "mx-valid.tm.test"), (20, "mx-plain.tm.test")]),
        ("equal.tm.test", [(10, "mx-valid.tm.test"), (10, "mx.wild.tm.test")]),
        ("valid.tm.test", [(10, "mx-valid.tm.test")]),
        ("plain.tm.test", [(10, "mx-plain.tm.test")]),
        ("badcert.tm.test", [(10, "mx-selfsigned.tm.test"), (20, "mx-valid.tm.test")]),
        ("plainfirst.tm.test", [(10, "mx-plain.tm.test"), (20, "mx-valid.tm.test")]),
        ("nullmx.tm.test", [(0, ".")]),
        ("cname.tm.test", [(10, "alias.tm.test")]),
        ("noaddr.tm.test", [(10, "mx-noaddr.tm.test"), (20, "mx-valid.tm.test")]),
        ("zero.tm.test", [(10, "mx-zero.tm.test"), (20, "mx-valid.tm.test")]),
        ("implicit.tm.test", []),
    ]
    for name, want in dns_expect:
        rc, got = mx(name)
        check(rc == "NOERROR" and got == want, "MX %s -> %s %r" % (name, rc, got))
    rc, got = mx("nosuch.tm.test")
    check(rc == "NXDOMAIN", "MX nosuch.tm.test -> %s" % rc)
    rc, ans = q("nosuch.tm.test", "A")
    check(rc == "NXDOMAIN", "A nosuch.tm.test -> %s" % rc)
    a_expect = [(h, a) for (_, a, h, _, _) in LISTENERS] + [
        ("mx-dead.tm.test", DEAD_ADDR), ("mx-zero.tm.test", "0.0.0.0"),
        ("mx-both.tm.test", "127.0.0.2"), ("implicit.tm.test", "127.0.0.2")]
    for host, addr in a_expect:
        rc, ans = q(host, "A")
        got = [d for (_, t, d) in ans if t == "A"]
        check(rc == "NOERROR" and got == [addr], "A %s -> %s %r" % (host, rc, got))
    for host, want in (("mx-ipv6.tm.test", ["::1"]), ("mx-both.tm.test", ["::1"]),
                       ("mx-valid.tm.test", []), ("mx-noaddr.tm.test", [])):
        rc, ans = q(host, "AAAA")
        got = [d for (_, t, d) in ans if t == "AAAA"]
        check(rc == "NOERROR" and got == want, "AAAA %s -> %s %r" % (host, rc, got))
    for host in ("mx-ipv6.tm.test", "mx-noaddr.tm.test"):
        rc, ans = q(host, "A")
        got = [d for (_, t, d) in ans if t == "A"]
        check(rc == "NOERROR" and got == [], "A %s -> %s %r (NODATA)" % (host, rc, got))
    rc, ans = q("mx-noaddr.tm.test", "TXT")
    check(rc == "NOERROR" and any(t == "TXT" for (_, t, _) in ans),
          "TXT mx-noaddr.tm.test -> %s %r" % (rc, ans))
    rc, ans = q("alias.tm.test", "A")
    check(rc == "NOERROR" and ("alias.tm.test", "CNAME", "mx-valid.tm.test") in ans
          and ("mx-valid.tm.test", "A", "127.0.0.2") in ans, "A alias.tm.test -> %s %r" % (rc, ans))
    rc, ans = dns_query(dhost, dport, "valid.tm.test", "MX", timeout=2, tcp=True)
    check(rc == "NOERROR" and len(ans) == 1, "MX valid.tm.test over TCP -> %s %r" % (rc, ans))

    # sts.test, on both servers
    ahost, aport = env["TM_TEST_DNS_ALT"].rsplit(":", 1)
    alt = (ahost, int(aport))
    for name, mxs, txt, alt_txt, has_a in STS_DOMAINS:
        domain = "%s.%s" % (name, STS_ZONE)
        for server, want_id in (((dhost, dport), txt),
                                (alt, txt if alt_txt == "same" else alt_txt)):
            rc, ans = q("_mta-sts." + domain, "TXT", server)
            got = [d for (_, t, d) in ans if t == "TXT"]
            want = ["v=STSv1; id=%s;" % want_id] if want_id else []
            # no record: the name does not exist (NXDOMAIN)
            check(rc == ("NOERROR" if want else "NXDOMAIN") and got == want,
                  "TXT _mta-sts.%s at %s:%d -> %s %r"
                  % (domain, server[0], server[1], rc, got))
            rc, ans = q(domain, "MX", server)
            got = [d for (_, t, d) in sorted(ans, key=lambda a: a[2]) if t == "MX"]
            want = [(10 * (i + 1), mx + ".tm.test") for i, mx in enumerate(mxs)]
            check(rc == "NOERROR" and got == want, "MX %s -> %s %r" % (domain, rc, got))
            rc, ans = q("mta-sts." + domain, "A", server)
            got = [d for (_, t, d) in ans if t == "A"]
            check(got == ([STS_HTTPS_ADDR] if has_a else []),
                  "A mta-sts.%s -> %s %r" % (domain, rc, got))

    sh, sp = env["TM_TEST_DNS_SERVFAIL"].rsplit(":", 1)
    for tcp in (False, True):
        rc, ans = dns_query(sh, int(sp), "valid.tm.test", "MX", timeout=2, tcp=tcp)
        check(rc == "SERVFAIL", "servfail port (%s) -> %s" % ("tcp" if tcp else "udp", rc))
    th, tp = env["TM_TEST_DNS_TIMEOUT"].rsplit(":", 1)
    t0 = time.monotonic()
    try:
        dns_query(th, int(tp), "valid.tm.test", "MX", timeout=0.5, tries=1)
        check(False, "timeout port answered")
    except socket.timeout:
        check(True, "timeout port: no answer in %.2fs" % (time.monotonic() - t0))
    except OSError as e:
        check(False, "timeout port: %r" % e)

    # nothing listens on the dead address
    try:
        socket.create_connection((DEAD_ADDR, port), timeout=2).close()
        check(False, "%s:%d refuses connections" % (DEAD_ADDR, port))
    except ConnectionRefusedError:
        check(True, "%s:%d refuses connections" % (DEAD_ADDR, port))
    except OSError as e:
        check(False, "%s:%d: %r" % (DEAD_ADDR, port, e))

    return check.done()


def _starttls(s, context, hostname):
    """smtplib.SMTP.starttls() without server_hostname on 3.11: do it by hand."""
    s.ehlo_or_helo_if_needed()
    if not s.has_extn("starttls"):
        raise smtplib_exc("STARTTLS not offered")
    code, resp = s.docmd("STARTTLS")
    if code != 220:
        raise smtplib_exc("STARTTLS refused: %d %r" % (code, resp))
    s.sock = context.wrap_socket(s.sock, server_hostname=hostname)
    s.file = None
    s.helo_resp = None
    s.ehlo_resp = None
    s.esmtp_features = {}
    s.does_esmtp = False
    return code, resp


def smtplib_exc(msg):
    import smtplib
    return smtplib.SMTPException(msg)


# --------------------------------------------------------------------------

def main(argv):
    def add_start_opts(sp):
        sp.add_argument("--port", type=int, default=None, help="SMTP port (default: a free one)")
        peerlib.add_key_type(sp, "leaf/CA key type: EC P-256 (default) or RSA 2048")
        sp.add_argument("--direct-master", action="store_true",
                        default=os.environ.get("TM_PEERS_DIRECT_MASTER", "") == "1",
                        help="start postfix's master(8) directly instead of through "
                             "'postfix start' (skips its shell checks: ~1-2 s faster)")

    ap, sub = peerlib.command_parser(__doc__, add_start_opts)
    sp = sub.add_parser("wait-mail")
    sp.add_argument("--dir", required=True)
    sp.add_argument("--to", required=True)
    sp.add_argument("--count", type=int, default=1)
    sp.add_argument("--timeout", type=float, default=10.0)
    sp = sub.add_parser("query")
    sp.add_argument("--dir", required=True)
    sp.add_argument("--server", default=None,
                    help="dnsmasq (default), alt (the second dnsmasq), servfail, timeout "
                         "or HOST:PORT")
    sp.add_argument("--tcp", action="store_true")
    sp.add_argument("--timeout", type=float, default=2.0)
    sp.add_argument("name")
    sp.add_argument("type", nargs="?", default="A")
    sp = sub.add_parser("selftest")
    sp.add_argument("--dir", required=True)
    sp = sub.add_parser("dns-broken")
    sp.add_argument("--dir", required=True)
    sp.add_argument("--pidfile", required=True)
    sp.add_argument("--servfail-port", type=int, required=True)
    sp.add_argument("--timeout-port", type=int, required=True)
    sp.add_argument("--lifetime", type=float, default=BROKEN_DNS_LIFETIME)
    args = ap.parse_args(argv)

    if args.command == "start":
        return cmd_start(args)
    if args.command == "stop":
        return cmd_stop(args)
    if args.command == "run":
        return cmd_run(args)
    if args.command == "wait-mail":
        try:
            return cmd_wait_mail(args)
        except PeerError as e:
            log(str(e))
            return 2
    if args.command == "query":
        return cmd_query(args)
    if args.command == "selftest":
        return cmd_selftest(args)
    if args.command == "dns-broken":
        return broken_dns_main(args)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
