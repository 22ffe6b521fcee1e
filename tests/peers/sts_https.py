#!/usr/bin/python3
"""An HTTPS server on loopback serving MTA-STS policies (RFC 8461 3.3) for
the tests of MTA-STS (tests/sts).  Python standard library only
(http.server + ssl), certificates from certs.py (--set sts).

    sts_https.py start --dir DIR [--policy-dir PDIR]   # writes DIR/env
    sts_https.py stop  --dir DIR        # exit 0 even if nothing runs
    sts_https.py run   --dir DIR [--policy-dir PDIR] -- CMD ARGS...
                                        # start, run CMD with the env, stop
    sts_https.py serve --dir DIR        # the server itself (started by start)

Three listeners on 127.0.0.1, each on a free port chosen by the kernel
(never 443, 25 or 53):

  TM_STS_HTTPS_PORT            certificate `sts` (test CA) for every
                               mta-sts.<scenario>.test below
  TM_STS_HTTPS_BADNAME_PORT    certificate `sts-wrongname` (test CA) for
                               mta-sts.other.test only: the name mismatch
  TM_STS_HTTPS_UNTRUSTED_PORT  certificate `sts-untrusted`, mta-sts.ok.test
                               from a CA the client does not trust

The Host header picks the answer (every listener answers the same way;
a path other than /.well-known/mta-sts.txt gets 404).  First the policy
directory (TM_STS_POLICY_DIR: --policy-dir, default DIR/policies, created
empty): if it holds a file named after the Host (e.g.
mta-sts.enforce.sts.test), the answer is 200 text/plain with that file's
bytes, read on each request, so a test can change a policy between two
fetches (write a temporary file and rename it).  Otherwise the scenario
is the part of the Host between "mta-sts." and ".test", or else the first
label after "mta-sts." (mta-sts.redirect.sts.test is the redirect
scenario: tests/sts/test_sts_postfix.c's sts.test domains):

  mta-sts.ok.test         200 text/plain, Content-Length: enforce policy
  mta-sts.chunked.test    200 text/plain; charset=utf-8, chunked (extensions,
                          a trailer): testing policy
  mta-sts.close.test      HTTP/1.0 200 text/plain, no length, body ends at
                          the close (TLS close_notify sent): enforce policy
  mta-sts.notfound.test   404
  mta-sts.redirect.test   301, Location https://mta-sts.ok.test/...
  mta-sts.html.test       200 text/html (a valid policy otherwise)
  mta-sts.big.test        200 text/plain, Content-Length: 70 KiB body
  mta-sts.badsyntax.test  200 text/plain: a policy without max_age
  mta-sts.cut.test        as close, but the TCP connection ends without a TLS
                          close_notify (a body cut by someone on the path)
  mta-sts.slow.test       200 text/plain, headers then nothing for
                          STALL_SECONDS, then the close
  anything else           404
  (any Host)              421 if the TLS SNI was not that Host name

The policies are POLICIES below (the C test checks what they say).
Each GET is logged (TM_STS_HTTPS_LOG) before it is answered, as
"GET PATH Host HOST SNI SNI -> SCENARIO" ("file" for the policy
directory), so a test can count the fetches of a host.
env keys: TM_STS_HTTPS_ADDR (127.0.0.1), TM_STS_HTTPS_PORT,
TM_STS_HTTPS_BADNAME_PORT, TM_STS_HTTPS_UNTRUSTED_PORT, TM_STS_CA (the test
CA), TM_STS_OTHER_CA (the CA of sts-untrusted, unrelated to TM_STS_CA),
TM_STS_CERTDIR, TM_STS_POLICY_DIR, TM_STS_HTTPS_LOG, TM_STS_HTTPS_PID.

Bounded: start-up waits at most READY_TIMEOUT, each connection has a
socket timeout of CONN_TIMEOUT, the stall lasts STALL_SECONDS, and the
server exits by itself after LIFETIME.  It is stopped by its recorded PID
only (and only if its command line is ours).  `run` exits 77 if openssl or
Python's ssl module is missing (1 with CI=true), like peers.py.
"""

import os
import signal
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.dont_write_bytecode = True     # no __pycache__ in the source tree
import certs  # tests/peers/certs.py
import peerlib  # tests/peers/peerlib.py
from peerlib import PeerError, PeerMissing, log, kill_pid, stop_by_pidfile, write_env

peerlib.PROG = "sts_https.py"

ADDR = "127.0.0.1"
READY_TIMEOUT = 10.0     # seconds for serve to write its ports
CONN_TIMEOUT = 10.0      # socket timeout of each connection (handshake, reads, writes)
STALL_SECONDS = 4.0      # mta-sts.slow.test: headers, then this long nothing
LIFETIME = 1800.0        # serve exits by itself after 30 minutes
WELL_KNOWN = "/.well-known/mta-sts.txt"
POLICY_FILE_MAX = 1 << 20    # a policy-directory file is served up to this size

POLICIES = {
    "ok": "version: STSv1\r\nmode: enforce\r\nmx: mail.ok.test\r\nmx: *.mx.ok.test\r\n"
          "max_age: 86400\r\n",
    "chunked": "version: STSv1\nmode: testing\nmx: mx1.chunked.test\nmx: mx2.chunked.test\n"
               "mx: *.chunked.test\nmax_age: 604800\n",
    "close": "version: STSv1\r\nmode: enforce\r\nmx: mx.close.test\r\n"
             "extension: ignored\r\nmax_age: 1234567\r\n",
    "html": "version: STSv1\r\nmode: enforce\r\nmx: mail.html.test\r\nmax_age: 86400\r\n",
    "badsyntax": "version: STSv1\r\nmode: enforce\r\nmx: mail.badsyntax.test\r\n",
}


class Paths:
    def __init__(self, d):
        self.dir = os.path.abspath(d)
        j = lambda *a: os.path.join(self.dir, *a)
        self.certs = j("certs")
        self.ports = j("ports")          # written by serve when it listens
        self.pid = j("sts_https.pid")    # our record: what stop() kills
        self.log = j("sts_https.log")
        self.env = j("env")
        self.policies = j("policies")    # the default policy directory


# --------------------------------------------------------------------------
# the server (sts_https.py serve)

SCENARIOS = ("ok", "chunked", "close", "notfound", "redirect", "html", "big", "badsyntax",
             "slow", "cut")


def scenario_for(host):
    """The built-in scenario of a Host name (see the docstring)."""
    if not (host.startswith("mta-sts.") and host.endswith(".test")):
        return "notfound"
    middle = host[len("mta-sts."):-len(".test")]
    if middle in SCENARIOS:
        return middle
    first = middle.split(".")[0]
    return first if first in SCENARIOS else "notfound"


def policy_file(policy_dir, host):
    """The bytes of the policy directory's file for host, or None."""
    if not policy_dir or not host or "/" in host or "\0" in host or host.startswith("."):
        return None
    try:
        with open(os.path.join(policy_dir, host), "rb") as fp:
            return fp.read(POLICY_FILE_MAX)
    except OSError:
        return None


def response(scenario, body=None):
    """The raw bytes answering GET for scenario, as a list of writes (a
    float is a stall of that many seconds).  "file": 200 text/plain with
    body (bytes)."""
    def plain(body, ctype="text/plain", status="200 OK", extra=""):
        b = body if isinstance(body, bytes) else body.encode()
        return [("HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n%s"
                 "Connection: close\r\n\r\n" % (status, ctype, len(b), extra)).encode() + b]

    if scenario == "file":
        return plain(body)
    if scenario == "ok":
        return plain(POLICIES["ok"])
    if scenario == "chunked":
        body = POLICIES["chunked"].encode()
        parts = [body[:7], body[7:30], body[30:]]
        out = [b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n"
               b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"]
        for i, part in enumerate(parts):
            ext = b";name=value" if i == 1 else b""
            out.append(b"%x%s\r\n%s\r\n" % (len(part), ext, part))
        out.append(b"0\r\nX-Trailer: ignored\r\n\r\n")
        return out
    if scenario == "close":
        return [b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n",
                POLICIES["close"].encode()]
    if scenario == "cut":
        # A close-delimited body that a man in the middle cut at a line
        # end: what arrives parses, but the TCP connection ends without a
        # TLS close_notify (do_GET closes it bare).
        return [b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n",
                POLICIES["close"].encode()]
    if scenario == "redirect":
        return plain("moved\n", status="301 Moved Permanently",
                     extra="Location: https://mta-sts.ok.test%s\r\n" % WELL_KNOWN)
    if scenario == "html":
        return plain(POLICIES["html"], ctype="text/html")
    if scenario == "big":
        line = "mx: " + "a" * 58 + ".big.test\r\n"            # 72 bytes
        body = POLICIES["ok"] + line * (70 * 1024 // len(line) + 1)
        return plain(body)
    if scenario == "badsyntax":
        return plain(POLICIES["badsyntax"])
    if scenario == "slow":
        return [b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 200\r\n"
                b"Connection: close\r\n\r\n", STALL_SECONDS]
    if scenario == "nosni":
        return plain("SNI missing or not the Host\n", status="421 Misdirected Request")
    return plain("no such policy\n", status="404 Not Found")


def serve(args):
    import ssl
    import http.server
    import socketserver

    p = Paths(args.dir)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda s, f: stop.set())
    signal.signal(signal.SIGINT, lambda s, f: stop.set())

    def logmsg(msg):
        sys.stderr.write("%s %s\n" % (time.strftime("%H:%M:%S"), msg))
        sys.stderr.flush()

    def tls_context(name):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(os.path.join(p.certs, name + ".pem"),
                            os.path.join(p.certs, name + ".key"))
        # Keep the SNI the client sent: do_GET compares it with Host.
        ctx.sni_callback = lambda sock, sni, c: setattr(sock, "tm_sni", sni)
        return ctx

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = CONN_TIMEOUT

        def setup(self):
            # The handshake in the connection's own thread, not in accept().
            self.request.settimeout(CONN_TIMEOUT)
            self.request = self.server.tls.wrap_socket(self.request, server_side=True)
            super().setup()

        def log_message(self, fmt, *a):
            logmsg("%s port %d: %s" % (self.client_address[0], self.server.server_address[1],
                                       fmt % a))

        def do_GET(self):
            host = (self.headers.get("Host") or "").split(":")[0].strip().lower().rstrip(".")
            scenario, body = "notfound", None
            if self.path == WELL_KNOWN:
                body = policy_file(self.server.policy_dir, host)
                scenario = "file" if body is not None else scenario_for(host)
            sni = getattr(self.request, "tm_sni", None)
            if sni != host:
                # RFC 8461 3.3 wants SNI: a fetch without it (or naming
                # another host) gets 421, which is no policy.
                scenario = "nosni"
            self.log_message("GET %s Host %s SNI %s -> %s", self.path, host, sni, scenario)
            self.close_connection = True
            try:
                for w in response(scenario, body):
                    if isinstance(w, float):
                        self.wfile.flush()
                        stop.wait(w)
                    else:
                        self.wfile.write(w)
                self.wfile.flush()
                if scenario == "cut":
                    # A bare TCP close, no close_notify: SSLSocket.shutdown
                    # drops the TLS layer and shuts the socket down.
                    self.request.shutdown(socket.SHUT_RDWR)
                    return
                # close_notify, so that a close-delimited body ends cleanly
                # (waits at most CONN_TIMEOUT for the client's).
                self.request.unwrap()
            except (OSError, ValueError) as e:
                self.log_message("%s: %s", scenario, e)

        def finish(self):
            try:
                super().finish()
            except (OSError, ValueError):
                pass

    class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
        daemon_threads = True
        allow_reuse_address = True

        def __init__(self, cert):
            super().__init__((ADDR, 0), Handler)
            self.tls = tls_context(cert)
            self.policy_dir = args.policy_dir

        def handle_error(self, request, client_address):
            logmsg("port %d: connection from %s failed: %s"
                   % (self.server_address[1], client_address[0], sys.exc_info()[1]))

        def shutdown_request(self, request):
            try:
                request.close()
            except OSError:
                pass

    servers = {k: Server(c) for k, c in (("main", "sts"), ("badname", "sts-wrongname"),
                                         ("untrusted", "sts-untrusted"))}
    threads = [threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.1},
                                daemon=True) for s in servers.values()]
    for t in threads:
        t.start()
    ports = " ".join("%s=%d" % (k, s.server_address[1]) for k, s in servers.items())
    peerlib.write_atomic(p.ports, ports + "\n")
    logmsg("listening on %s: %s" % (ADDR, ports))
    stop.wait(LIFETIME)
    for s in servers.values():
        s.shutdown()
        s.server_close()
    logmsg("stopped")
    return 0


# --------------------------------------------------------------------------
# start, stop, run

def stop_recorded(p):
    """Stop the server whose PID we recorded, if it is still ours."""
    stop_by_pidfile(p.pid, p.dir, "sts_https.py serve", whole_arg=True, not_ours="not ours")
    for f in (p.pid, p.env, p.ports):
        try:
            os.unlink(f)
        except OSError:
            pass


def read_ports(p):
    try:
        with open(p.ports) as fp:
            return dict((k, int(v)) for k, v in (w.split("=") for w in fp.read().split()))
    except (OSError, ValueError):
        return None


def do_start(args):
    t0 = time.monotonic()
    p = Paths(args.dir)
    try:
        import ssl  # noqa: F401
    except ImportError as e:
        raise PeerMissing("sts peer missing: Python's ssl module (%s)" % e) from None
    os.makedirs(p.dir, exist_ok=True)
    stop_recorded(p)                  # a stale server from an earlier start
    peerlib.remove_paths([p.certs, p.log])
    if args.policy_dir:
        policy_dir = os.path.abspath(args.policy_dir)
        os.makedirs(policy_dir, exist_ok=True)
    else:
        # the default directory starts empty on every start
        policy_dir = p.policies
        peerlib.remove_paths([policy_dir])
        os.makedirs(policy_dir)
    try:
        certs.CertBuilder(p.certs, args.key_type, "sts").build()
    except certs.OpensslMissing as e:
        raise PeerMissing(str(e)) from None
    except certs.CertError as e:
        raise PeerError(str(e)) from None
    t_certs = time.monotonic() - t0
    with open(p.log, "wb") as logf:
        proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "serve",
                                 "--dir", p.dir, "--policy-dir", policy_dir],
                                stdin=subprocess.DEVNULL, stdout=logf,
                                stderr=logf, start_new_session=True, close_fds=True)
    try:
        peerlib.write_atomic(p.pid, "%d\n" % proc.pid)
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            ports = read_ports(p)
            if ports and all(k in ports for k in ("main", "badname", "untrusted")):
                break
            rc = proc.poll()
            if rc is not None:
                raise PeerError("the server exited with %d during start-up:\n%s"
                                % (rc, open(p.log, errors="replace").read()[-2000:]))
            if time.monotonic() > deadline:
                raise PeerError("the server did not listen within %.0fs" % READY_TIMEOUT)
            time.sleep(0.02)
    except BaseException:
        kill_pid(proc.pid, "sts_https.py serve")
        raise
    env = {
        "TM_STS_HTTPS_ADDR": ADDR,
        "TM_STS_HTTPS_PORT": str(ports["main"]),
        "TM_STS_HTTPS_BADNAME_PORT": str(ports["badname"]),
        "TM_STS_HTTPS_UNTRUSTED_PORT": str(ports["untrusted"]),
        "TM_STS_CA": os.path.join(p.certs, "ca.pem"),
        "TM_STS_OTHER_CA": os.path.join(p.certs, "other-ca.pem"),
        "TM_STS_CERTDIR": p.certs,
        "TM_STS_POLICY_DIR": policy_dir,
        "TM_STS_HTTPS_LOG": p.log,
        "TM_STS_HTTPS_PID": str(proc.pid),
    }
    write_env(p.env, env)
    log("server pid %d up on %s ports %s/%s/%s in %.2fs (certs %.2fs), env in %s"
        % (proc.pid, ADDR, ports["main"], ports["badname"], ports["untrusted"],
           time.monotonic() - t0, t_certs, p.env))
    return env


def main(argv):
    def start_opts(sp):
        peerlib.add_key_type(sp, "certificate key type")
        sp.add_argument("--policy-dir", default=None,
                        help="serve mta-sts.<domain> policies from files in this "
                             "directory, one per host name (default DIR/policies)")

    ap, sub = peerlib.command_parser(__doc__, start_opts)
    sp = sub.add_parser("serve")
    sp.add_argument("--dir", required=True)
    sp.add_argument("--policy-dir", default=None)
    args = ap.parse_args(argv)
    if args.command == "serve":
        return serve(args)
    if args.command == "start":
        return peerlib.start_command(lambda: do_start(args))
    p = Paths(args.dir)
    if args.command == "stop":
        stop_recorded(p)
        return 0
    return peerlib.run_command(args.cmd, lambda: do_start(args), lambda: stop_recorded(p),
                               "the server", ignore_sigint=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
