#!/usr/bin/python3
"""Scriptable, deliberately misbehaving SMTP server for libtlsmail's tests.

It plays what a real Postfix cannot: STARTTLS refused, bytes injected after
the 220, aborted or garbage handshakes, drops after the final dot, dripping
and malformed replies.  Standard library only; loopback only; every wait is
bounded by a step timeout and by --lifetime.

    hostile_smtp.py --listen 127.0.0.1:0 --script S.json --record R.json \
        --port-file P [--cert C.pem --key K.pem] [--lifetime 60] \
        [--done-fd N] [--notify-fd M]

--done-fd N: an inherited pipe whose other end the test closes once its
client is done (it will make no further connection and send nothing more).
From then on, no wait for a connection lasts longer than DONE_GRACE (a
connection the client made before is already queued: a scripted one is
still served, an extra one still counted) and "sleep", "drip" and
"send_split" stop pausing (nobody is left to observe the timing).  Without
it, every wait runs its full course.
--notify-fd M: an inherited pipe the server writes one byte to once the
port file is written; it is closed when the server exits.  The test polls
it instead of sleeping (a wake-up only: the port file and the exit status
stay the truth).

Script (JSON):
    {"connections": [ [step, step, ...], ... ],   # connection i uses entry i
     "linger": 0.3,          # after the last connection, keep counting
                             # unexpected connections this long (seconds;
                             # less once --done-fd says the client is done)
     "accept_timeout": 60}   # max wait for each scripted connection
A connection entry may also be {"steps": [...]}, with optionally
    "optional": true    the client may or may not make this connection: it
                        is awaited "accept_timeout" seconds (default: the
                        script's "linger"); when it does not come, it and
                        the entries after it are not served (optional ones
                        count in "optional_unused", others as missing)
    "accept_timeout": s this connection's own wait

Steps (executed in order; optional "timeout" on every reading step):
    {"send": "220 hi\\r\\n"}            latin-1 string, sent as is
    {"send_b64": "..."}                 raw bytes, base64
    {"send_split": ["220 ", "hi\\r\\n"], "gap": 0.2}   separate segments
    {"drip": "250 ok\\r\\n", "interval": 1.0}          one byte at a time
    {"expect": "EHLO"} / {"expect": null}  read one line, prefix check
                                        (case-insensitive); "strict": true
                                        closes the connection on mismatch
    {"expect_data": true}               read content through CRLF.CRLF
    {"read_until_close": true}          default timeout 5 s
    {"read_bytes": 65536}               read (and record) until at least that
                                        many bytes arrived in this step
                                        (default timeout 30 s)
    {"sleep": 1.5}
    {"starttls": true}                  TLS handshake (server side), optional
                                        "cert", "key", "min_version",
                                        "max_version" ("TLSv1.2"/"TLSv1.3"),
                                        "hold_tickets" (below)
    {"tls_garbage": "HTTP/1.0 400 Bad\\r\\n\\r\\n"}  answer the ClientHello
                                        with raw bytes, then close
                                        ("close": false keeps it open)
    {"tls_alert": true}                 answer with a fatal handshake_failure
                                        alert record, then close (same option)
    {"close": true}                     FIN (then drain up to "drain" s, 1.0)
                                        "notify": true sends close_notify first
    {"reset": true}                     RST (SO_LINGER 0)
    {"auto": true, "caps": [...]}       well-behaved server until QUIT, close
                                        or idle "timeout" (10 s); optional
                                        "replies": {"MAIL"|"RCPT"|"DATA"|"DOT"|
                                        "RSET"|"NOOP"|"QUIT"|"EHLO"|"HELO"|
                                        "STARTTLS": "text" or [texts in turn]},
                                        "name": host name in EHLO/HELO,
                                        "rcpt_limits": [2, ...]: in the
                                        n-th transaction (MAIL) only the
                                        first rcpt_limits[n] RCPTs get 250,
                                        later ones "452 4.5.3" (RFC 5321
                                        4.5.3.1.10); no entry: no limit
When the steps run out the connection is closed as by {"close": true}.
A read step that times out, or meets EOF, records it and the script goes on.
In "auto", QUIT gets 221 and a close (with close_notify inside TLS);
STARTTLS gets 220 + handshake when "STARTTLS" is in caps (503 inside TLS,
502 when not offered, 454 without a certificate); EHLO inside TLS does not
list STARTTLS; a failed handshake ends the auto step.  "auto" also accepts
"cert", "key", "min_version", "max_version" and "hold_tickets" for its
STARTTLS.

"hold_tickets": true (starttls and auto steps): after a TLS 1.3 handshake,
the records the TLS engine wrote once the handshake was done (OpenSSL's
NewSessionTicket messages) are not flushed; they go out in front of the
next reply, in the same write (the reply to the client's EHLO in "auto"),
and the server then reads as usual.  Events "held_tickets <n> bytes <r>
records" and "sent held_tickets <n> bytes with <m> bytes of reply in one
write: '<reply's first line>'".  After a TLS 1.2 handshake nothing is held
(the server's last flight may still be unsent): event "hold_tickets
ignored: TLSv1.2".

Session resumption: one server process keeps one TLS context per
certificate and version range, so a client can resume (session ticket or
ID, TLS 1.3 PSK) a session of an earlier connection to the same process;
a new process never knows an old session.  A resumed handshake gives the
event "tls_resumed" (after "tls_ok") and "tls_resumed": true in the record.
What the ClientHello of a handshake the server plays (starttls, auto)
offered for resumption is the event "offered_session" with "psk" (TLS 1.3 pre_shared_key), "session_ticket" (a non-empty TLS 1.2
ticket) or "none", then the legacy session ID's length (which alone says
nothing: TLS 1.3 clients send a random one).

Connections are served one at a time, in accept order.  Connections beyond
the script (accepted during "linger", or still queued at exit) are counted
in "unexpected_connections" and closed at once.  Each scripted connection is
awaited up to "accept_timeout"; those never made are "missing_connections".
SIGTERM/SIGINT stop the server early; it still writes the record
("terminated": true), as it does when --lifetime runs out
("lifetime_expired": true).

Record (JSON, ensure_ascii, byte strings as latin-1):
    {"connections": [{"index", "peer", "received", "received_plain",
      "received_tls", "received_after_tls_failure", "lines", "data",
      "events", "tls_version", "tls_cipher", "sni", "tls_resumed"}],
     "unexpected_connections": n, "missing_connections": n,
     "optional_unused": n, "lifetime_expired": bool, "terminated": bool,
     "scripted_connections": n}
Events (strings; tests match prefixes):
    client_closed, client_reset, client_close_notify, tls_error <why>,
    server_closed, server_reset, timeout <step>, eof <step>,
    mismatch expected 'X' got 'Y', bare_lf_line: <line>, line_too_long <n>,
    pipelined_before_tls: <bytes>, non_tls_after_starttls: <bytes>,
    sni <name>|sni (none), tls_ok <version> <cipher>, tls_resumed,
    tls_failed <why>, held_tickets <n> bytes <r> records,
    sent held_tickets <n> bytes with <m> bytes of reply in one write: '<line>',
    hold_tickets ignored: <version>,
    offered_session <psk|session_ticket|none>... (session_id <n> bytes),
    client_hello <n> bytes, sent tls_garbage, sent tls_alert,
    read_until_close <n> bytes, read_bytes <n> bytes, steps_skipped <n>,
    error <step>: <exc>,
    aborted (lifetime|terminated), data_too_long, record_truncated
"received" holds every byte the client sent, in order: the plaintext before
TLS, the decrypted TLS application data, and raw bytes after a failed
handshake.  TLS handshake bytes are not recorded, except that non-TLS bytes
read where a ClientHello was expected count as plaintext (received_plain)
and also give the event "non_tls_after_starttls: ...".
"""

import argparse
import base64
import ipaddress
import json
import os
import select
import signal
import socket
import ssl
import struct
import sys
import time

MAX_LINE = 64 * 1024
MAX_DATA = 64 * 1024 * 1024
MAX_RECORD = 128 * 1024 * 1024
MAX_EVENT = 4096
TLS_ALERT_HANDSHAKE_FAILURE = bytes([0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28])
DEFAULT_NAME = "mx-hostile.tm.test"
# After --done-fd said the client is done: how long a wait for a connection
# still lasts.  Only covers the kernel's handling of a connect() the client
# made just before (it is normally queued before connect() returns).
DONE_GRACE = 0.02


class Lifetime(BaseException):
    """The server's lifetime ran out."""


class Terminated(BaseException):
    """SIGTERM/SIGINT: write the record and leave."""


def latin1(b):
    return bytes(b).decode("latin-1")


def text(s):
    """Any str, made representable in latin-1 (the record's byte model)."""
    return str(s).encode("latin-1", "replace").decode("latin-1")


def tls_records(data):
    """Number of whole TLS records in data."""
    n = i = 0
    while i + 5 <= len(data):
        i += 5 + struct.unpack("!H", bytes(data[i + 3:i + 5]))[0]
        if i <= len(data):
            n += 1
    return n


def client_hello_offers(data):
    """What a ClientHello (the first TLS record in data) offers for session
    resumption: a list of "psk" / "session_ticket" and the length of its
    session ID; None while the record is incomplete; ([], -1) when it is
    not a ClientHello."""
    if len(data) < 5:
        return None
    rlen = struct.unpack("!H", bytes(data[3:5]))[0]
    if len(data) < 5 + rlen:
        return None
    h = bytes(data[5:5 + rlen])
    try:
        if data[0] != 0x16 or h[0] != 1:
            return [], -1
        h = h[4:4 + int.from_bytes(h[1:4], "big")]
        i = 2 + 32
        sid = h[i]
        i += 1 + sid
        i += 2 + struct.unpack("!H", h[i:i + 2])[0]   # cipher suites
        i += 1 + h[i]                                   # compression methods
        offers = []
        if i + 2 <= len(h):
            end = i + 2 + struct.unpack("!H", h[i:i + 2])[0]
            i += 2
            while i + 4 <= end:
                t, n = struct.unpack("!HH", h[i:i + 4])
                i += 4
                if t == 41:
                    offers.append("psk")
                elif t == 35 and n > 0:
                    offers.append("session_ticket")
                i += n
        return offers, sid
    except (IndexError, struct.error):
        return [], -1


def step_bytes(v):
    if isinstance(v, (bytes, bytearray)):
        return bytes(v)
    return str(v).encode("latin-1", "replace")


class Server:
    def __init__(self, args, script):
        self.args = args
        self.script = script
        self.deadline = time.monotonic() + args.lifetime
        self.t0 = time.monotonic()
        self.ctx_cache = {}
        self.current = None  # the Conn being served (for the SNI callback)
        self.done_fd = getattr(args, "done_fd", None)
        self.done_at = None  # when --done-fd said the client is done

    def client_done(self, wait=0.0):
        """True once --done-fd was closed (or written to) by the test.
        Waits up to `wait` seconds for it (bounded by the lifetime)."""
        if self.done_at is not None:
            return True
        if self.done_fd is None:
            if wait > 0:
                time.sleep(wait)
            return False
        try:
            r, _, _ = select.select([self.done_fd], [], [], max(0.0, wait))
        except (OSError, ValueError):
            r = [self.done_fd]   # a broken pipe end: nothing left to wait for
        if r:
            self.done_at = time.monotonic()
        return self.done_at is not None

    def remaining(self, deadline=None):
        now = time.monotonic()
        if now >= self.deadline:
            raise Lifetime()
        end = self.deadline if deadline is None else min(deadline, self.deadline)
        return end - now

    def sleep(self, seconds):
        """A pause of the script; cut short once the client is done."""
        end = time.monotonic() + max(0.0, float(seconds))
        while True:
            left = self.remaining(end)
            if left <= 0:
                return
            if self.client_done(min(left, 0.5)):
                return
            if time.monotonic() >= end:
                return

    def tls_context(self, cert, key, min_version=None, max_version=None):
        ck = (cert, key, min_version, max_version)
        ctx = self.ctx_cache.get(ck)
        if ctx is not None:
            return ctx
        if not cert or not key:
            raise ValueError("no --cert/--key for a TLS step")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        vers = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}
        if min_version:
            ctx.minimum_version = vers[min_version]
        if max_version:
            ctx.maximum_version = vers[max_version]
        ctx.load_cert_chain(cert, key)
        ctx.sni_callback = self._sni
        self.ctx_cache[ck] = ctx
        return ctx

    def _sni(self, sslobj, name, ctx):
        c = self.current
        if c is not None:
            c.rec["sni"] = text(name) if name is not None else None
            c.event("sni %s" % (name if name is not None else "(none)"))
        return None


class Conn:
    def __init__(self, server, sock, peer, index):
        self.srv = server
        self.sock = sock
        self.index = index
        self.buf = bytearray()     # application bytes read, not yet consumed
        self.phase = "plain"       # plain | tls | tls_failed
        self.sslobj = None
        self.bio_in = None
        self.bio_out = None
        self.eof = False
        self.closed = False
        self.recorded = 0
        self.received = bytearray()
        self.received_plain = bytearray()
        self.received_tls = bytearray()
        self.received_fail = bytearray()
        self.rec = {"index": index, "peer": text(peer), "lines": [], "data": [],
                    "events": [], "tls_version": None, "tls_cipher": None,
                    "sni": None, "tls_resumed": False,
                    "started": round(time.monotonic() - server.t0, 3)}
        self.held = None           # TLS records held back ("hold_tickets")
        self.held_reply = ""       # first line of the reply they went with
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass

    # ---- recording -------------------------------------------------------
    def event(self, s):
        s = text(s)
        if len(s) > MAX_EVENT:
            s = s[:MAX_EVENT] + "...(%d chars)" % len(s)
        self.rec["events"].append(s)

    def record_in(self, data, phase=None):
        if not data:
            return
        if self.recorded + len(data) > MAX_RECORD:
            if self.recorded <= MAX_RECORD:
                self.event("record_truncated")
                self.recorded = MAX_RECORD + 1
            return
        self.recorded += len(data)
        phase = phase or self.phase
        self.received += data
        if phase == "plain":
            self.received_plain += data
        elif phase == "tls":
            self.received_tls += data
        else:
            self.received_fail += data

    def finish_record(self):
        r = self.rec
        r["received"] = latin1(self.received)
        r["received_plain"] = latin1(self.received_plain)
        r["received_tls"] = latin1(self.received_tls)
        r["received_after_tls_failure"] = latin1(self.received_fail)
        r["ended"] = round(time.monotonic() - self.srv.t0, 3)
        return r

    # ---- raw socket ------------------------------------------------------
    def raw_recv(self, deadline, n=65536):
        """bytes, b'' at EOF, None on timeout."""
        if self.closed:
            return b""
        left = self.srv.remaining(deadline)
        if left <= 0:
            return None
        self.sock.settimeout(max(left, 0.001))
        try:
            return self.sock.recv(n)
        except socket.timeout:
            self.srv.remaining()  # raises Lifetime if that is what ran out
            return None
        except ConnectionResetError:
            self.event("client_reset")
            return b""

    def raw_send(self, data):
        if self.closed:
            raise OSError("connection already closed")
        self.sock.settimeout(max(0.001, min(10.0, self.srv.remaining())))
        self.sock.sendall(data)

    # ---- application layer ----------------------------------------------
    def send(self, data):
        if self.phase == "tls":
            if self.held is not None:
                self.held_reply = latin1(bytes(data).split(b"\r\n", 1)[0][:200])
            self.sslobj.write(data)
            self.flush_tls(release=True)
        else:
            self.raw_send(data)

    def flush_tls(self, release=False):
        """Send what the TLS engine wrote.  Records held back by
        "hold_tickets" stay held unless `release`; then they go first, in
        the same write."""
        if self.held is not None and not release:
            return
        out = self.bio_out.read()
        if self.held is not None:
            held, self.held = self.held, None
            self.event("sent held_tickets %d bytes with %d bytes of reply in one write: %r"
                       % (len(held), len(out), self.held_reply))
            out = held + out
        if out:
            self.raw_send(out)

    def fill(self, deadline):
        """Read more application bytes into buf: True, False (EOF), None (timeout)."""
        if self.eof:
            return False
        # Records already in the TLS engine come first: the client's first
        # application data may arrive in the same segment as its Finished
        # (an abbreviated, resumed handshake), and the socket then has
        # nothing more to say.  Tried once: an incomplete record needs more.
        buffered = self.phase == "tls" and bool(self.bio_in.pending or self.sslobj.pending())
        while True:
            if buffered:
                buffered = False
            else:
                raw = self.raw_recv(deadline)
                if raw is None:
                    return None
                if raw == b"":
                    self.eof = True
                    self.event("client_closed")
                    return False
                if self.phase != "tls":
                    self.record_in(raw)
                    self.buf += raw
                    return True
                self.bio_in.write(raw)
            got = bytearray()
            closed = None
            while True:
                try:
                    chunk = self.sslobj.read(65536)
                except ssl.SSLWantReadError:
                    break
                except ssl.SSLZeroReturnError:
                    closed = "client_close_notify"
                    break
                except ssl.SSLError as e:
                    closed = "tls_error %s" % e
                    break
                if not chunk:
                    closed = "client_close_notify"
                    break
                got += chunk
            try:
                self.flush_tls()
            except OSError:
                pass
            if got:
                self.record_in(got)
                self.buf += got
            if closed:
                # A TLS error ends the readable stream like an EOF does.
                self.eof = True
                self.event(closed)
                return bool(got)
            if got:
                return True

    def read_line(self, deadline):
        """(line bytes incl. terminator or None, status 'ok'|'eof'|'timeout'|'long')."""
        start = 0
        while True:
            i = self.buf.find(b"\n", start)
            if i >= 0:
                line = bytes(self.buf[:i + 1])
                del self.buf[:i + 1]
                return line, "ok"
            if len(self.buf) >= MAX_LINE:
                line = bytes(self.buf[:MAX_LINE])
                del self.buf[:MAX_LINE]
                return line, "long"
            start = len(self.buf)
            r = self.fill(deadline)
            if r is None:
                return None, "timeout"
            if r is False:
                if self.buf:
                    line = bytes(self.buf)
                    self.buf.clear()
                    return line, "eof"
                return None, "eof"

    def read_data(self, deadline):
        """(content through CRLF.CRLF or None, status)."""
        start = 0
        while True:
            if self.buf.startswith(b".\r\n"):
                end = 3
            else:
                i = self.buf.find(b"\r\n.\r\n", start)
                end = i + 5 if i >= 0 else -1
            if end >= 0:
                data = bytes(self.buf[:end])
                del self.buf[:end]
                return data, "ok"
            if len(self.buf) > MAX_DATA:
                self.event("data_too_long")
                return None, "long"
            start = max(0, len(self.buf) - 4)
            r = self.fill(deadline)
            if r is None:
                return None, "timeout"
            if r is False:
                return None, "eof"

    def add_line(self, line):
        s = line
        if s.endswith(b"\r\n"):
            s = s[:-2]
        elif s.endswith(b"\n"):
            s = s[:-1]
            self.event("bare_lf_line: %s" % latin1(s))
        self.rec["lines"].append(latin1(s))
        return latin1(s)

    # ---- TLS ---------------------------------------------------------------
    def check_pipelined(self):
        if self.buf:
            self.event("pipelined_before_tls: %s" % latin1(self.buf))
            self.buf.clear()  # never handed to the TLS engine

    def starttls(self, ctx, deadline, hold_tickets=False):
        self.check_pipelined()
        self.bio_in = ssl.MemoryBIO()
        self.bio_out = ssl.MemoryBIO()
        self.sslobj = ctx.wrap_bio(self.bio_in, self.bio_out, server_side=True)
        first = True
        hello = bytearray()  # the ClientHello, until parsed
        self.srv.current = self
        try:
            while True:
                try:
                    self.sslobj.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    self.flush_tls()
                    raw = self.raw_recv(deadline)
                    if raw is None:
                        raise TimeoutError("timeout during handshake")
                    if raw == b"":
                        self.eof = True
                        raise ConnectionError("client closed during handshake")
                    if first and raw[0] != 0x16:
                        self.event("non_tls_after_starttls: %s" % latin1(raw[:512]))
                        self.record_in(raw, "plain")
                    first = False
                    if hello is not None:
                        hello += raw
                        got = client_hello_offers(hello)
                        if got is not None:
                            hello = None
                            if got[1] >= 0:
                                self.event("offered_session %s (session_id %d bytes)"
                                           % (" ".join(got[0]) or "none", got[1]))
                    self.bio_in.write(raw)
            if hold_tickets and self.sslobj.version() == "TLSv1.3":
                # What the engine wrote after the handshake: the tickets.
                held = self.bio_out.read()
                self.held = held
                self.event("held_tickets %d bytes %d records" % (len(held), tls_records(held)))
            else:
                if hold_tickets:
                    self.event("hold_tickets ignored: %s" % self.sslobj.version())
                self.flush_tls()
        except (ssl.SSLError, OSError, TimeoutError, ConnectionError, ValueError) as e:
            try:
                self.flush_tls()  # our alert, if any
            except Exception:
                pass
            self.phase = "tls_failed"
            self.event("tls_failed %s" % e)
            return False
        self.phase = "tls"
        self.rec["tls_version"] = self.sslobj.version()
        c = self.sslobj.cipher()
        self.rec["tls_cipher"] = c[0] if c else None
        self.event("tls_ok %s %s" % (self.sslobj.version(), self.rec["tls_cipher"]))
        if self.sslobj.session_reused:
            self.rec["tls_resumed"] = True
            self.event("tls_resumed")
        return True

    def read_client_hello(self, deadline):
        """Read one TLS record (or whatever comes) where a ClientHello belongs."""
        self.check_pipelined()
        got = bytearray()
        while len(got) < 16389:
            need = 5 if len(got) < 5 else 5 + struct.unpack("!H", bytes(got[3:5]))[0]
            if len(got) >= need:
                break
            raw = self.raw_recv(deadline, need - len(got))
            if raw is None:
                self.event("timeout client_hello")
                break
            if raw == b"":
                self.eof = True
                self.event("client_closed")
                break
            if not got and raw[0] != 0x16:
                self.event("non_tls_after_starttls: %s" % latin1(raw[:512]))
                self.record_in(raw, "plain")
                got += raw
                break
            got += raw
        if got and got[0] == 0x16:
            self.event("client_hello %d bytes" % len(got))
        self.phase = "tls_failed"
        return got

    # ---- closing -------------------------------------------------------------
    def close(self, drain=1.0, notify=False):
        if self.closed:
            return
        if notify and self.phase == "tls":
            try:
                self.sslobj.unwrap()
            except (ssl.SSLError, OSError):
                pass
            try:
                self.flush_tls(release=True)
            except OSError:
                pass
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        self.event("server_closed")
        # Drain (and record) what the client still sends, so that unread
        # bytes do not turn our FIN into an RST.
        if drain and drain > 0:
            end = time.monotonic() + float(drain)
            while not self.eof:
                r = self.fill(end)
                if r is None:
                    break
            self.buf.clear()
        self.hard_close()

    def reset(self):
        if self.closed:
            return
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.event("server_reset")
        self.hard_close()

    def hard_close(self):
        try:
            self.sock.close()
        except OSError:
            pass
        self.closed = True


# ---- steps --------------------------------------------------------------------

def step_deadline(step, default):
    t = step.get("timeout", default)
    return time.monotonic() + float(t)


def do_expect(c, step):
    want = step.get("expect")
    line, st = c.read_line(step_deadline(step, 10.0))
    label = "expect %s" % (want if want is not None else "(any)")
    if line is None:
        c.event("%s %s" % ("timeout" if st == "timeout" else "eof", label))
        return False if step.get("strict") else True
    s = c.add_line(line)
    if st == "long":
        c.event("line_too_long %d" % len(line))
    if want is not None and not s.upper().startswith(str(want).upper()):
        c.event("mismatch expected %r got %r" % (want, s))
        if step.get("strict"):
            c.close(drain=0.2)
            return False
    return True


def do_expect_data(c, step):
    data, st = c.read_data(step_deadline(step, 10.0))
    if data is None:
        c.event("%s expect_data" % st)
        return True
    c.rec["data"].append(latin1(data))
    return True


def do_read_until_close(c, step):
    end = step_deadline(step, 5.0)
    n = len(c.buf)
    c.buf.clear()
    while True:
        before = len(c.received)
        r = c.fill(end)
        n += len(c.received) - before
        c.buf.clear()
        if r is None:
            c.event("timeout read_until_close")
            break
        if r is False:
            break
    c.event("read_until_close %d bytes" % n)
    return True


def do_read_bytes(c, step):
    want = int(step["read_bytes"])
    end = step_deadline(step, 30.0)
    n = len(c.buf)
    c.buf.clear()
    while n < want:
        before = len(c.received)
        r = c.fill(end)
        n += len(c.received) - before
        c.buf.clear()
        if r is None:
            c.event("timeout read_bytes")
            break
        if r is False:
            break
    c.event("read_bytes %d bytes" % n)
    return True


def do_starttls(c, step):
    a = c.srv.args
    ctx = c.srv.tls_context(step.get("cert", a.cert), step.get("key", a.key),
                            step.get("min_version"), step.get("max_version"))
    c.starttls(ctx, step_deadline(step, 10.0), bool(step.get("hold_tickets")))
    return True


def do_tls_raw_answer(c, step, answer, name):
    c.read_client_hello(step_deadline(step, 5.0))
    try:
        c.raw_send(answer)
        c.event("sent %s" % name)
    except OSError as e:
        c.event("error %s: %s" % (name, e))
    if step.get("close", True):
        c.close(drain=step.get("drain", 1.0))
        return False
    return True


class Auto:
    COMMANDS = ("EHLO", "HELO", "MAIL", "RCPT", "DATA", "RSET", "NOOP", "QUIT",
                "STARTTLS", "VRFY", "HELP")

    def __init__(self, c, step):
        self.c = c
        self.step = step
        self.caps = [str(x) for x in step.get("caps", ["PIPELINING", "8BITMIME"])]
        self.name = str(step.get("name", DEFAULT_NAME))
        self.replies = step.get("replies", {}) or {}
        self.uses = {}
        self.rcpt_limits = [int(x) for x in step.get("rcpt_limits", [])]
        self.transaction = -1   # index of the current transaction (MAIL)
        self.rcpts = 0          # RCPTs in it so far

    def reply(self, key, default):
        v = self.replies.get(key)
        n = self.uses.get(key, 0)
        self.uses[key] = n + 1
        if v is None:
            r = default
        elif isinstance(v, list):
            r = v[min(n, len(v) - 1)] if v else default
        else:
            r = v
        r = step_bytes(r)
        if not r.endswith(b"\n"):
            r += b"\r\n"
        return r

    def ehlo_text(self):
        caps = [x for x in self.caps
                if not (x.upper() == "STARTTLS" and self.c.phase == "tls")]
        lines = [self.name] + caps
        out = []
        for i, l in enumerate(lines):
            out.append("250%s%s\r\n" % (" " if i == len(lines) - 1 else "-", l))
        return "".join(out)

    def run(self):
        c = self.c
        idle = float(self.step.get("timeout", 10.0))
        while not c.closed:
            line, st = c.read_line(time.monotonic() + idle)
            if line is None:
                if st == "timeout":
                    c.event("timeout auto")
                return True
            s = c.add_line(line)
            if st == "long":
                c.event("line_too_long %d" % len(line))
                c.send(b"500 5.5.2 line too long\r\n")
                continue
            verb = s.split(" ", 1)[0].upper()
            if verb == "EHLO":
                c.send(self.reply("EHLO", self.ehlo_text()))
            elif verb == "HELO":
                c.send(self.reply("HELO", "250 %s" % self.name))
            elif verb == "MAIL":
                self.transaction += 1
                self.rcpts = 0
                c.send(self.reply("MAIL", "250 2.1.0 Ok"))
            elif verb == "RCPT":
                self.rcpts += 1
                t = self.transaction
                if 0 <= t < len(self.rcpt_limits) and self.rcpts > self.rcpt_limits[t]:
                    c.send(b"452 4.5.3 Error: too many recipients\r\n")
                else:
                    c.send(self.reply("RCPT", "250 2.1.5 Ok"))
            elif verb == "DATA":
                r = self.reply("DATA", "354 End data with <CR><LF>.<CR><LF>")
                c.send(r)
                if not r.startswith(b"354"):
                    continue
                data, dst = c.read_data(time.monotonic() + idle)
                if data is None:
                    c.event("%s expect_data" % dst)
                    return True
                c.rec["data"].append(latin1(data))
                c.send(self.reply("DOT", "250 2.0.0 Ok: queued as HOSTILE"))
            elif verb == "RSET":
                c.send(self.reply("RSET", "250 2.0.0 Ok"))
            elif verb == "NOOP":
                c.send(self.reply("NOOP", "250 2.0.0 Ok"))
            elif verb == "QUIT":
                c.send(self.reply("QUIT", "221 2.0.0 Bye"))
                c.close(drain=self.step.get("drain", 1.0), notify=True)
                return False
            elif verb == "STARTTLS":
                offered = any(x.upper() == "STARTTLS" for x in self.caps)
                if c.phase == "tls":
                    c.send(b"503 5.5.1 Error: TLS already active\r\n")
                elif not offered:
                    c.send(b"502 5.5.1 Error: command not implemented\r\n")
                else:
                    a = c.srv.args
                    try:
                        ctx = c.srv.tls_context(self.step.get("cert", a.cert),
                                                self.step.get("key", a.key),
                                                self.step.get("min_version"),
                                                self.step.get("max_version"))
                    except (ValueError, OSError, ssl.SSLError, KeyError) as e:
                        c.event("error tls_context: %s" % e)
                        c.send(b"454 4.7.0 TLS not available\r\n")
                        continue
                    r = self.reply("STARTTLS", "220 2.0.0 Ready to start TLS")
                    # Pipelined bytes must be caught before anything else.
                    c.check_pipelined()
                    c.send(r)
                    if not r.startswith(b"220"):
                        continue
                    if not c.starttls(ctx, time.monotonic() + idle,
                                      bool(self.step.get("hold_tickets"))):
                        return True
            else:
                c.send(b"502 5.5.2 Error: command not recognized\r\n")
        return False


def do_auto(c, step):
    return Auto(c, step).run()


def run_step(c, step):
    """Execute one step; False ends the connection's script."""
    if not isinstance(step, dict):
        c.event("bad_step %r" % (step,))
        return True
    if "send" in step:
        c.send(step_bytes(step["send"]))
    elif "send_b64" in step:
        c.send(base64.b64decode(step["send_b64"]))
    elif "send_split" in step:
        gap = float(step.get("gap", 0.2))
        pieces = step["send_split"]
        for i, p in enumerate(pieces):
            if i:
                c.srv.sleep(gap)
            c.send(step_bytes(p))
    elif "drip" in step:
        data = step_bytes(step["drip"])
        iv = float(step.get("interval", 1.0))
        for i in range(len(data)):
            if i:
                c.srv.sleep(iv)
            c.send(data[i:i + 1])
    elif "expect" in step:
        return do_expect(c, step)
    elif "expect_data" in step:
        return do_expect_data(c, step)
    elif "read_until_close" in step:
        return do_read_until_close(c, step)
    elif "read_bytes" in step:
        return do_read_bytes(c, step)
    elif "sleep" in step:
        c.srv.sleep(float(step["sleep"]))
    elif "starttls" in step:
        return do_starttls(c, step)
    elif "tls_garbage" in step:
        return do_tls_raw_answer(c, step, step_bytes(step["tls_garbage"]), "tls_garbage")
    elif "tls_alert" in step:
        return do_tls_raw_answer(c, step, TLS_ALERT_HANDSHAKE_FAILURE, "tls_alert")
    elif "close" in step:
        c.close(drain=step.get("drain", 1.0), notify=bool(step.get("notify")))
        return False
    elif "reset" in step:
        c.reset()
        return False
    elif "auto" in step:
        return do_auto(c, step)
    else:
        c.event("unknown_step %s" % json.dumps(step)[:200])
    return True


def serve_connection(c, steps):
    try:
        for n, step in enumerate(steps):
            if c.closed:
                c.event("steps_skipped %d" % (len(steps) - n))
                break
            try:
                if not run_step(c, step):
                    if n + 1 < len(steps):
                        c.event("steps_skipped %d" % (len(steps) - n - 1))
                    break
            except (Lifetime, Terminated):
                raise
            except Exception as e:  # client misbehaviour must not kill us
                c.event("error %s: %s: %s" % (next(iter(step), "?") if isinstance(step, dict) else "?",
                                              type(e).__name__, e))
        if not c.closed:
            c.close(drain=1.0)
    finally:
        if not c.closed:
            c.hard_close()
        c.srv.current = None


# ---- main ---------------------------------------------------------------------

def parse_listen(s):
    if s.startswith("["):
        host, _, port = s[1:].partition("]:")
    else:
        host, _, port = s.rpartition(":")
    port = int(port)
    ip = ipaddress.ip_address(host)
    if not ip.is_loopback:
        raise SystemExit("hostile_smtp: refusing non-loopback address %s" % host)
    if port in (25, 53):
        raise SystemExit("hostile_smtp: refusing port %d" % port)
    if not 0 <= port <= 65535:
        raise SystemExit("hostile_smtp: bad port %d" % port)
    return host, port, (socket.AF_INET6 if ip.version == 6 else socket.AF_INET)


def write_atomic(path, data):
    """Readers see the whole file or none (no fsync: they read the page
    cache, and nothing has to survive a crash of the machine)."""
    tmp = "%s.tmp.%d" % (path, os.getpid())
    with open(tmp, "w", encoding="ascii") as f:
        f.write(data)
    os.replace(tmp, path)


def accept_one(srv, lsock, until):
    """(sock, peer) or None when `until` passed (or, once the client is
    done, DONE_GRACE after that).  lsock is non-blocking."""
    while True:
        if srv.done_at is not None:
            until = min(until, srv.done_at + DONE_GRACE)
        left = srv.remaining(until)
        if left <= 0:
            return None
        fds = [lsock]
        if srv.done_fd is not None and srv.done_at is None:
            fds.append(srv.done_fd)
        try:
            r, _, _ = select.select(fds, [], [], max(0.001, left))
        except (OSError, ValueError):
            r = []
            time.sleep(0.01)  # bounded by `until`
        if lsock in r:
            try:
                s, peer = lsock.accept()
            except BlockingIOError:
                continue
            except OSError:
                time.sleep(0.01)  # e.g. ECONNABORTED; bounded by `until`
                continue
            s.setblocking(True)
            return s, "%s:%d" % (peer[0], peer[1])
        if srv.done_fd in r:
            srv.client_done()


def is_optional(entry):
    return isinstance(entry, dict) and bool(entry.get("optional"))


def main():
    ap = argparse.ArgumentParser(description="scriptable hostile SMTP server (loopback only)")
    ap.add_argument("--listen", required=True)
    ap.add_argument("--script", required=True)
    ap.add_argument("--record", required=True)
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--lifetime", type=float, default=60.0)
    ap.add_argument("--done-fd", type=int)
    ap.add_argument("--notify-fd", type=int)
    args = ap.parse_args()
    if not 0 < args.lifetime <= 3600:
        raise SystemExit("hostile_smtp: --lifetime must be in (0, 3600]")

    with open(args.script, "r", encoding="utf-8") as f:
        script = json.load(f)
    conns = script.get("connections", []) if isinstance(script, dict) else script
    conns = conns if isinstance(conns, list) else []
    linger = float(script.get("linger", 0.3)) if isinstance(script, dict) else 0.3
    accept_timeout = (float(script.get("accept_timeout", args.lifetime))
                      if isinstance(script, dict) else args.lifetime)

    host, port, fam = parse_listen(args.listen)
    lsock = socket.socket(fam, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind((host, port))
    lsock.listen(16)
    lsock.setblocking(False)

    srv = Server(args, script)
    record = {"connections": [], "unexpected_connections": 0, "missing_connections": 0,
              "optional_unused": 0, "lifetime_expired": False, "terminated": False,
              "scripted_connections": len(conns)}

    def on_signal(signum, frame):
        raise Terminated()
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    c = None
    try:
        write_atomic(args.port_file, "%d\n" % lsock.getsockname()[1])
        if args.notify_fd is not None:
            try:
                os.write(args.notify_fd, b"p")
            except OSError:
                pass
        for i, entry in enumerate(conns):
            steps = entry.get("steps", []) if isinstance(entry, dict) else entry
            wait = accept_timeout
            if isinstance(entry, dict) and "accept_timeout" in entry:
                wait = float(entry["accept_timeout"])
            elif is_optional(entry):
                wait = linger
            got = accept_one(srv, lsock, time.monotonic() + wait)
            if got is None:
                unused = sum(1 for e in conns[i:] if is_optional(e))
                record["optional_unused"] = unused
                record["missing_connections"] = len(conns) - i - unused
                break
            c = Conn(srv, got[0], got[1], i)
            serve_connection(c, steps if isinstance(steps, list) else [])
            record["connections"].append(c.finish_record())
            c = None
        else:
            # Extra connections: counted and closed at once.
            end = time.monotonic() + linger
            for _ in range(10000):
                try:
                    got = accept_one(srv, lsock, end)
                except Lifetime:
                    got = None
                if got is None:
                    break
                record["unexpected_connections"] += 1
                try:
                    got[0].close()
                except OSError:
                    pass
    except Lifetime:
        record["lifetime_expired"] = True
    except Terminated:
        record["terminated"] = True
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if c is not None:
            c.event("aborted (%s)" % ("lifetime" if record["lifetime_expired"] else "terminated"))
            if not c.closed:
                c.hard_close()
            record["connections"].append(c.finish_record())
        if record["lifetime_expired"] or record["terminated"]:
            rest = conns[len(record["connections"]):]
            unused = sum(1 for e in rest if is_optional(e))
            record["optional_unused"] = unused
            record["missing_connections"] = len(rest) - unused
        # Count extra connections still waiting in the backlog.
        lsock.setblocking(False)
        for _ in range(1000):
            try:
                s, _peer = lsock.accept()
            except OSError:
                break
            record["unexpected_connections"] += 1
            s.close()
        lsock.close()
        write_atomic(args.record, json.dumps(record, ensure_ascii=True, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
