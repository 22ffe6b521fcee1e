#!/usr/bin/python3
"""Python smtplib side of the libtlsmail benchmark (see bench/README.md).

Same arguments and JSON output as bench_tm and bench_netsmtp:

  bench_smtplib.py --host NAME --addr IP --port N --ca FILE --count N
                   --mode reused|new|resume [--size BYTES] [--tls12]
                   [--max-seconds S]  (the loop stops early after S seconds)

reused  one connection (connect, EHLO, STARTTLS, EHLO outside the
        measurement), then --count sendmail() calls
new     --count times: connect, EHLO, STARTTLS, EHLO, sendmail, QUIT
resume  like new, offering the previous connection's TLS session
--tls12 caps the TLS version at 1.2 (libtlsmail on mbedTLS 2.28 speaks 1.2)

The certificate is verified against --ca with the name --host while the
socket goes to --addr (the MX name must match, the address is loopback).
CPU = resource.getrusage(RUSAGE_SELF) user+sys around the loop only.
Standard library only.
"""

import argparse
import json
import resource
import smtplib
import socket
import ssl
import sys
import time


def make_message(size):
    """The benchmark message, byte-identical to bench_tm's make_message."""
    hdr = (b"From: <bench@bench.tm.test>\r\nTo: <rcpt@bench.tm.test>\r\n"
           b"Subject: libtlsmail benchmark\r\n\r\n")
    alpha = b"abcdefghijklmnopqrstuvwxyz0123456789"
    out = bytearray(hdr)
    k = 0
    while len(out) < size:
        out += bytes(alpha[(k + j) % 36] for j in range(76)) + b"\r\n"
        k += 1
    if size >= len(hdr) + 2:
        del out[size:]
        out[size - 2:size] = b"\r\n"
    return bytes(out)


class SMTP(smtplib.SMTP):
    """smtplib.SMTP that connects to an address but verifies a host name.

    smtplib uses the host given to connect() as the TLS server name; the
    peers are reached by address, so _get_socket is pointed at the address
    while _host keeps the MX name.  Optionally offers a saved TLS session.
    """

    def __init__(self, addr, tls_session=None, **kw):
        self._bench_addr = addr
        self._bench_session = tls_session
        super().__init__(**kw)

    def _get_socket(self, host, port, timeout):
        return socket.create_connection((self._bench_addr, port), timeout)

    def starttls(self, *, context=None):
        # smtplib.SMTP.starttls without a way to pass session=: the same
        # steps, plus the session (only for --mode resume).
        if self._bench_session is None:
            return super().starttls(context=context)
        self.ehlo_or_helo_if_needed()
        if not self.has_extn("starttls"):
            raise smtplib.SMTPNotSupportedError("STARTTLS not offered")
        code, resp = self.docmd("STARTTLS")
        if code != 220:
            raise smtplib.SMTPResponseException(code, resp)
        self.sock = context.wrap_socket(self.sock, server_hostname=self._host,
                                        session=self._bench_session)
        self.file = None
        self.helo_resp = self.ehlo_resp = None
        self.esmtp_features = {}
        self.does_esmtp = False
        return code, resp


SYS = [0.0]


def cpu():
    ru = resource.getrusage(resource.RUSAGE_SELF)
    SYS[0] = ru.ru_stime
    return ru.ru_utime + ru.ru_stime


def pct(v, p):
    if not v:
        return 0.0
    k = max(1, min(len(v), int(p / 100.0 * len(v) + 0.999999)))
    return v[k - 1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="mx-valid.tm.test")
    ap.add_argument("--addr", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--ca", required=True)
    ap.add_argument("--dns")  # accepted for symmetry, unused
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--mode", choices=("reused", "new", "resume"), default="reused")
    ap.add_argument("--size", type=int, default=10240)
    ap.add_argument("--tls12", action="store_true")
    ap.add_argument("--max-seconds", type=float, default=30.0)
    a = ap.parse_args()

    ctx = ssl.create_default_context(cafile=a.ca)
    if a.tls12:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    msg = make_message(a.size)
    sender, rcpt = "bench@bench.tm.test", ["rcpt@bench.tm.test"]
    helo = "bench.tm.test"
    lat = []
    err = ""
    info = {}
    ok = 0

    def open_conn(session=None):
        # host= sets smtplib's _host (the TLS server name) and connects.
        s = SMTP(a.addr, tls_session=session, host=a.host, port=a.port,
                 local_hostname=helo, timeout=20)
        s.ehlo(helo)
        s.starttls(context=ctx)
        s.ehlo(helo)
        return s

    def note(s):
        info["version"] = s.sock.version()
        info["cipher"] = s.sock.cipher()[0]
        info["resumed"] = info.get("resumed", 0) + (1 if s.sock.session_reused else 0)

    try:
        if a.mode == "reused":
            s = open_conn()
            note(s)
            c0, t0 = cpu(), time.monotonic()
            s0 = SYS[0]
            for _ in range(a.count):
                t = time.monotonic()
                s.sendmail(sender, rcpt, msg)
                lat.append(time.monotonic() - t)
                ok += 1
                if time.monotonic() - t0 > a.max_seconds:
                    break
            t1, c1 = time.monotonic(), cpu()
            s.quit()
        else:
            session = None
            c0, t0 = cpu(), time.monotonic()
            s0 = SYS[0]
            for _ in range(a.count):
                t = time.monotonic()
                s = open_conn(session if a.mode == "resume" else None)
                s.sendmail(sender, rcpt, msg)
                if a.mode == "resume":
                    session = s.sock.session
                note(s)
                s.quit()
                lat.append(time.monotonic() - t)
                ok += 1
                if time.monotonic() - t0 > a.max_seconds:
                    break
            t1, c1 = time.monotonic(), cpu()
    except (OSError, smtplib.SMTPException) as e:
        err = "%s: %s" % (type(e).__name__, e)
        t1, c1 = time.monotonic(), cpu()
        if "t0" not in locals():
            c0, t0, s0 = c1, t1, SYS[0]

    lat.sort()
    cpu_s = c1 - c0
    wall = t1 - t0
    out = {
        "client": "smtplib", "mode": a.mode, "threads": 1, "count": a.count, "ok": ok,
        "size": len(msg), "cpu_s": round(cpu_s, 6), "sys_s": round(SYS[0] - s0, 6),
        "cpu_per_msg_us": round(cpu_s / ok * 1e6, 2) if ok else 0,
        "wall_s": round(wall, 6), "msgs_per_s": round(ok / wall, 1) if wall > 0 else 0,
        "lat_ms": {"p50": round(pct(lat, 50) * 1e3, 3), "p90": round(pct(lat, 90) * 1e3, 3),
                   "max": round(lat[-1] * 1e3, 3) if lat else 0},
        "full_handshakes": (1 if a.mode == "reused" else ok - info.get("resumed", 0)),
        "tls": bool(info), "verified": bool(info),
        "tls_version": info.get("version", ""), "cipher": info.get("cipher", ""),
        "runtime": "Python %d.%d.%d, %s" % (sys.version_info[:3] + (ssl.OPENSSL_VERSION,)),
        "error": err,
    }
    print(json.dumps(out))
    return 0 if ok and not err else 1


if __name__ == "__main__":
    sys.exit(main())
