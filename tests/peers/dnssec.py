#!/usr/bin/python3
"""A DNSSEC-validating resolver on loopback for the DANE (RFC 7672) tests.

Starts ONE unbound process (`unbound -d -c DIR/unbound.conf`, a child of
this script, stopped by its recorded PID) on 127.0.0.1:PORT.  It serves,
from local auth-zones and without any network access:

  dane.test.      signed at start time with fresh ECDSA P-256 (algorithm 13)
                  keys (one KSK, one ZSK; ldns-keygen + ldns-signzone).  The
                  KSK's DS is unbound's trust anchor, so answers are validated
                  and carry the AD bit.  Two RRsets have a corrupted RRSIG and
                  are answered SERVFAIL (NOERROR with the CD bit): the TLSA
                  RRset of mx-bogus and the MX RRset of bogusmx.dane.test.
  insecure.test.  unsigned, declared `domain-insecure`: answered without AD.

Every other name gets REFUSED (local-zone "." refuse; names under test.,
one of unbound's default local zones, NXDOMAIN), so unbound never tries to
reach the root servers.

Commands:
  start    --dir DIR [--port N] [--smtp-port N] [--certdir D] [--tlsa FILE]
                                      build, sign, start; writes DIR/env
  stop     --dir DIR                  stop the unbound started from DIR
  run      --dir DIR [start options] -- CMD ARGS...
                                      start, run CMD with the env, always stop
  selftest --dir DIR                  check the running resolver
  query    --dir DIR NAME [TYPE] [--cd] [--no-do] [--tcp]
                                      print one answer (debugging)

`run` exits with CMD's exit code (130 on SIGINT/SIGTERM), 77 if a program is
missing (1 with CI=true), 1 on any other failure.  The DANE tests run it
inside tests/peers/peers.py's `run`:
  peers.py run --dir D1 -- dnssec.py run --dir D2 -- PROGRAM
so that the TLSA records name peers.py's certificates and SMTP port.

TLSA records live at _PORT._tcp.<host>, PORT being the SMTP port the client
connects to: --smtp-port, else $TM_TEST_PORT (set by peers.py run), else 25.

Records of dane.test (addresses are those of tests/peers/peers.py's Postfix
listeners: 127.0.0.2 serves the `valid` certificate (mx-valid.tm.test), .4
`expired`, .5 `selfsigned`, .6 no STARTTLS, .8 `intermediate`
(mx-chain.tm.test, sent with the intermediate CA), .10 `dane-ta`
(mx-ta.dane.test, mx-ta-cname, mx-ta-spki, mx-ta-root and mx-pkix .dane.test,
from the intermediate CA, sent with it), .11 offers STARTTLS and answers it
500).  "x" below is
sha256(SubjectPublicKeyInfo of certificate x) unless said otherwise:

  domain (MX ->)       host            A    TLSA at _PORT._tcp.<host>
  valid                mx-valid        .2   3 1 1 valid
  selfsigned           mx-selfsigned   .5   3 1 1 selfsigned
  expired              mx-expired      .4   3 1 1 expired (name, dates wrong)
  mismatch             mx-mismatch     .2   3 1 1 selfsigned (does not match)
  plain                mx-plain        .6   3 1 1 valid (no STARTTLS there)
  plainfirst           10 mx-plain, 20 mx-valid
  refused              mx-refused      .11  3 1 1 valid (STARTTLS offered,
                       answered 500; the listener's certificate is `valid`)
  notlsa               mx-notlsa       .2   none (secure NXDOMAIN)
  cname                alias CNAME mx-valid (TLSA only at the target)
  cname2               alias2 CNAME mx-notlsa (TLSA 3 1 1 valid only at
                       _PORT._tcp.alias2, the original name: RFC 7672 2.2.2)
  fulltable            mx-fulltable A 127.0.0.20 (nothing listens) and AAAA
                       ::1, no TLSA: with max_addresses 1 the A answer fills
                       the table and the AAAA answer counts for its AD bit only
  cname3, cname4       alias3, alias4 CNAME mx.insecure.test. (a signed CNAME
                       into an unsigned zone: the address answer is insecure,
                       the alias itself secure; TLSA at the alias: 3 1 1 valid
                       for alias3, 3 1 1 selfsigned, not matching, for alias4)
  multi                10 mx-mismatch, 20 mx-selfsigned
  insecure             mx.insecure.test (insecure A; its insecure TLSA
                       3 1 1 selfsigned would not match .2)
  bogus                mx-bogus        .2   3 1 1 valid, corrupted RRSIG
  bogus2               10 mx-bogus, 20 mx-valid
  bogusmx              10 mx-valid, the MX RRset's RRSIG corrupted
  implicit             no MX; A .2    3 1 1 valid at _PORT._tcp.implicit
  ee301/ee312/ee300/ee310  mx-eeNNN .5  3 0 1 / 3 1 2 / 3 0 0 / 3 1 0
                       selfsigned (certificate or key; SHA-256, SHA-512, full)
  tworec               mx-tworec       .2   3 1 1 selfsigned + 3 1 1 valid
  unusable             mx-unusable     .5   only unusable records: 1 1 1,
                       0 0 1 ca, 3 7 1, 3 1 9, 4 1 1 (the data of all but
                       0 0 1 is selfsigned's: a field ignored would match)
  unusableplain        mx-unusable-plain .6  1 1 1 valid
  ta                   mx-ta           .10  2 0 1 sha256(intermediate-ca DER)
  tacname              mx-ta-cname CNAME ta-target (.10), 2 0 1 intermediate
                       at ta-target only (the name check passes by the MX name)
  taalias              ta-alias CNAME mx-ta (the name check passes by the
                       TLSA base domain, mx-ta)
  taspki               mx-ta-spki      .10  2 1 1 intermediate-ca (key)
  taroot               mx-ta-root      .10  2 0 1 sha256(ca DER): the root is
                       not in the chain the server sends
  tabad                mx-tabad        .8   2 0 1 intermediate: the chain
                       matches, the name (mx-chain.tm.test) does not
  pkix                 mx-pkix         .10  none: PKIX-valid, secure, no TLSA
  stsdane              mx-expired      .4   as expired, and an MTA-STS TXT record
                       (id dane1; the test's fetcher serves the policy)
  stspkix, stsnomatch  mx-pkix         .10  as pkix, and MTA-STS TXT records
                       (ids pkix1, nomatch1)
  nosuch               NXDOMAIN (secure denial)

  insecure.test:  mx.insecure.test A 127.0.0.2 and TLSA 3 1 1 selfsigned;
                  domain.insecure.test MX 10 mx-valid.dane.test. and
                  mismatch.insecure.test MX 10 mx-mismatch.dane.test. (insecure
                  MX RRsets: no DANE at all)

TLSA data: from the certificates in --certdir (default $TM_TEST_CERTDIR, the
certificates of the enclosing peers.py run), else made with `certs.py
DIR/certs --set peers`: valid, selfsigned, expired, ca and intermediate-ca
.pem.  --tlsa FILE replaces all of them.  One record a line:
  OWNER USAGE SELECTOR MTYPE HEXDATA      (# starts a comment)
OWNER is relative to dane.test (e.g. `_PORT._tcp.mx-valid`; `_PORT.` is
replaced by the SMTP port), or absolute with a trailing dot (in dane.test.
or insecure.test.).  If no record is given for _PORT._tcp.mx-bogus, one is
added with the data of the first record.  The records actually used are
written to DIR/tlsa.txt.

Files in DIR: keys/ (K*.key/.private/.ds), dane.test.zone (unsigned),
dane.test.signed (loaded; with the corrupted RRSIGs), dane.test.anchor (DS
of the KSK = trust anchor), insecure.test.zone, unbound.conf, unbound.log,
unbound.stderr, dnssec.pid (our record of the unbound PID), env.

env keys: TM_DNSSEC_RESOLVER (127.0.0.1:PORT), TM_DNSSEC_ZONE (dane.test),
TM_DNSSEC_INSECURE_ZONE (insecure.test), TM_DNSSEC_DIR, TM_DNSSEC_ANCHOR,
TM_DNSSEC_TLSA, TM_DNSSEC_SMTP_PORT, TM_DNSSEC_CERTDIR, TM_DNSSEC_LOG,
TM_DNSSEC_PID.

Requirements: Debian packages unbound, ldnsutils, openssl (and python3).  Root
is not needed.  The system unbound service is neither used nor needed; /etc
is not read (unbound -c reads only DIR/unbound.conf).

Only the Python standard library is used.
"""

import base64
import concurrent.futures
import os
import random
import re
import shutil
import socket
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.dont_write_bytecode = True     # no __pycache__ in the source tree
import certs  # tests/peers/certs.py
import peerlib  # tests/peers/peerlib.py: what peers.py and dnssec.py share
from peerlib import (PeerError, PeerMissing, log, which, run_proc, pid_alive,
                     proc_cmdline, kill_pid, stop_by_pidfile, remove_paths, write_env,
                     read_env, bind_ok, port_candidates, TYPES, TYPE_NAMES, RCODES,
                     encode_name)

peerlib.PROG = "dnssec.py"

ADDR = "127.0.0.1"
ZONE = "dane.test."
INSECURE_ZONE = "insecure.test."
READY_TIMEOUT = 10.0                            # seconds for unbound to answer
TOOL_TIMEOUT = 30
SIG_INCEPTION_AGO = 2 * 86400                   # signatures valid from now-2d
SIG_LIFETIME = 10 * 365 * 86400                 # ... to now+10y


def run_cmd(argv, timeout=TOOL_TIMEOUT, cwd=None, stdin_data=None):
    """Run a short command; return (rc, stdout bytes, stderr text)."""
    p = run_proc(argv, timeout, missing="dnssec peer missing", timed_out="timed out",
                 input=stdin_data,
                 stdin=None if stdin_data is not None else subprocess.DEVNULL,
                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd)
    return p.returncode, p.stdout, p.stderr.decode("utf-8", "replace")


def must(argv, what, **kw):
    rc, out, err = run_cmd(argv, **kw)
    if rc != 0:
        raise PeerError("%s failed (rc %d): %s\n%s" % (what, rc, " ".join(argv),
                                                       err.strip()))
    return out


# --------------------------------------------------------------------------
# paths

class Paths:
    def __init__(self, d):
        self.dir = os.path.abspath(d)
        j = lambda *a: os.path.join(self.dir, *a)
        self.keys = j("keys")
        self.certs = j("certs")
        self.zone = j("dane.test.zone")
        self.signed = j("dane.test.signed")
        self.anchor = j("dane.test.anchor")
        self.insecure = j("insecure.test.zone")
        self.tlsa = j("tlsa.txt")
        self.conf = j("unbound.conf")
        self.log = j("unbound.log")
        self.stderr = j("unbound.stderr")
        self.unbound_pid = j("unbound.pid")     # written by unbound itself
        self.pid = j("dnssec.pid")              # our record: what stop() kills
        self.bin = j("bin")
        self.env = j("env")

    def generated(self):
        return [self.keys, self.certs, self.zone, self.signed, self.anchor,
                self.insecure, self.tlsa, self.conf, self.log, self.stderr,
                self.unbound_pid, self.pid, self.bin, self.env]


def clean(p, keep_certs=False):
    remove_paths(f for f in p.generated() if not (keep_certs and f == p.certs))


# --------------------------------------------------------------------------
# ports

def port_free(port):
    return (bind_ok(ADDR, port, socket.SOCK_DGRAM, listen=False)
            and bind_ok(ADDR, port, socket.SOCK_STREAM, listen=False))


def choose_port(exclude=()):
    for port in port_candidates():
        if port not in exclude and port_free(port):
            return port
    raise PeerError("no free port in %d-%d" % peerlib.PORT_RANGE)


# --------------------------------------------------------------------------
# TLSA data

# (host, usage, selector, mtype, certificate in certdir).  host is relative
# to dane.test. or absolute with a trailing dot; the owner of the record is
# _PORT._tcp.<host>, PORT the SMTP port of the tests (--smtp-port).
DEFAULT_TLSA = [
    ("mx-valid", 3, 1, 1, "valid"),
    ("mx-selfsigned", 3, 1, 1, "selfsigned"),
    ("mx-expired", 3, 1, 1, "expired"),           # name and dates wrong
    ("mx-mismatch", 3, 1, 1, "selfsigned"),       # 127.0.0.2 serves `valid`
    ("mx-plain", 3, 1, 1, "valid"),               # no STARTTLS there
    ("mx-refused", 3, 1, 1, "valid"),             # STARTTLS answered 500
    ("alias2", 3, 1, 1, "valid"),                 # the CNAME, not its target
    ("alias3", 3, 1, 1, "valid"),                 # a signed CNAME into insecure.test
    ("alias4", 3, 1, 1, "selfsigned"),            # the same, not matching
    ("mx-bogus", 3, 1, 1, "valid"),               # RRSIG corrupted
    ("implicit", 3, 1, 1, "valid"),               # a domain without MX
    ("mx-ee301", 3, 0, 1, "selfsigned"),          # the other selectors and
    ("mx-ee312", 3, 1, 2, "selfsigned"),          # matching types
    ("mx-ee300", 3, 0, 0, "selfsigned"),
    ("mx-ee310", 3, 1, 0, "selfsigned"),
    ("mx-tworec", 3, 1, 1, "selfsigned"),         # two records, the second
    ("mx-tworec", 3, 1, 1, "valid"),              # matches 127.0.0.2
    # unusable for SMTP only: PKIX-EE/-TA, an unknown selector, matching
    # type and usage; their data would match the selfsigned key if the
    # field were ignored
    ("mx-unusable", 1, 1, 1, "selfsigned"),
    ("mx-unusable", 0, 0, 1, "ca"),
    ("mx-unusable", 3, 7, 1, "selfsigned"),
    ("mx-unusable", 3, 1, 9, "selfsigned"),
    ("mx-unusable", 4, 1, 1, "selfsigned"),
    ("mx-unusable-plain", 1, 1, 1, "valid"),
    # DANE-TA: the intermediate CA that issued dane-ta (127.0.0.10) and
    # intermediate (127.0.0.8, mx-chain.tm.test); the root is not sent
    ("mx-ta", 2, 0, 1, "intermediate-ca"),
    ("ta-target", 2, 0, 1, "intermediate-ca"),
    ("mx-ta-spki", 2, 1, 1, "intermediate-ca"),
    ("mx-ta-root", 2, 0, 1, "ca"),
    ("mx-tabad", 2, 0, 1, "intermediate-ca"),
    # insecure: would not match 127.0.0.2, must be ignored
    ("mx." + INSECURE_ZONE, 3, 1, 1, "selfsigned"),
]
BOGUS_TLSA_HOST = "mx-bogus"        # its TLSA RRSIG gets corrupted
BOGUS_MX_DOMAIN = "bogusmx"         # its MX RRSIG gets corrupted


def tlsa_owner(host, port):
    return "_%d._tcp.%s" % (port, absolute(host))


def cert_der(pem):
    """The first certificate of a PEM file, DER."""
    with open(pem) as fp:
        text = fp.read()
    m = re.search(r"-----BEGIN CERTIFICATE-----(.*?)-----END CERTIFICATE-----", text, re.S)
    if not m:
        raise PeerError("no certificate in %s" % pem)
    return base64.b64decode("".join(m.group(1).split()))


def spki_der(openssl, pem):
    """openssl x509 -pubkey -noout -in PEM | openssl pkey -pubin -outform DER"""
    pub = must([openssl, "x509", "-pubkey", "-noout", "-in", pem], "openssl x509 -pubkey")
    return must([openssl, "pkey", "-pubin", "-outform", "DER"], "openssl pkey -pubin",
                stdin_data=pub)


def tlsa_data(cert, spki, selector, mtype):
    """RFC 6698 2.1: selector 0 the certificate, 1 the SubjectPublicKeyInfo;
    matching type 0 the data, 1 SHA-256, 2 SHA-512.  Unknown values (the
    unusable records) get the SHA-256 of the key."""
    import hashlib
    data = cert if selector == 0 else spki
    if mtype == 0 and selector in (0, 1):
        return data.hex()
    if mtype == 2:
        return hashlib.sha512(data).hexdigest()
    return hashlib.sha256(data).hexdigest()


def absolute(owner):
    owner = owner.lower()
    return owner if owner.endswith(".") else owner + "." + ZONE


def default_tlsa(certdir, port):
    openssl = which("openssl")
    if not openssl:
        raise PeerMissing("dnssec peer missing: openssl")
    names = sorted({r[4] for r in DEFAULT_TLSA})
    for n in names:
        if not os.path.exists(os.path.join(certdir, n + ".pem")):
            raise PeerError("%s.pem not found in %s" % (n, certdir))
    with concurrent.futures.ThreadPoolExecutor(len(names)) as ex:
        spkis = dict(zip(names, ex.map(
            lambda n: spki_der(openssl, os.path.join(certdir, n + ".pem")), names)))
    ders = {n: cert_der(os.path.join(certdir, n + ".pem")) for n in names}
    return [(tlsa_owner(h, port), u, s, m, tlsa_data(ders[c], spkis[c], s, m))
            for h, u, s, m, c in DEFAULT_TLSA]


def read_tlsa_file(path, port):
    recs = []
    with open(path) as fp:
        for lineno, line in enumerate(fp, 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            f = line.split()
            try:
                owner, u, s, m = f[0], int(f[1]), int(f[2]), int(f[3])
                data = "".join(f[4:]).lower()
                bytes.fromhex(data)
                if not data or not all(0 <= x <= 255 for x in (u, s, m)):
                    raise ValueError
            except (ValueError, IndexError):
                raise PeerError("%s:%d: want OWNER USAGE SELECTOR MTYPE HEX" % (path, lineno))
            owner = absolute(owner.replace("_PORT.", "_%d." % port))
            if not (owner.endswith("." + ZONE) or owner.endswith("." + INSECURE_ZONE)):
                raise PeerError("%s:%d: %s is not in %s or %s"
                                % (path, lineno, owner, ZONE, INSECURE_ZONE))
            recs.append((owner, u, s, m, data))
    if not recs:
        raise PeerError("%s: no TLSA records" % path)
    bogus = tlsa_owner(BOGUS_TLSA_HOST, port)
    if not any(r[0] == bogus for r in recs):
        recs.append((bogus,) + recs[0][1:])
    return recs


# --------------------------------------------------------------------------
# zones, keys, signing

ZONE_HEAD = """\
; generated by tests/peers/dnssec.py
$ORIGIN {origin}
$TTL 300
@        IN SOA ns.{origin} hostmaster.{origin} 1 3600 600 86400 300
@        IN NS  ns.{origin}
ns       IN A   127.0.0.1
"""

# The addresses are tests/peers/peers.py's Postfix listeners: .2 valid,
# .4 expired, .5 selfsigned, .6 no STARTTLS, .8 intermediate (mx-chain),
# .10 dane-ta (mx-ta.dane.test and its other names, from the intermediate),
# .11 STARTTLS offered and answered 500.
DANE_RECORDS = """\
valid        IN MX 10 mx-valid
mx-valid     IN A  127.0.0.2
selfsigned   IN MX 10 mx-selfsigned
mx-selfsigned IN A 127.0.0.5
expired      IN MX 10 mx-expired
mx-expired   IN A  127.0.0.4
mismatch     IN MX 10 mx-mismatch
mx-mismatch  IN A  127.0.0.2
plain        IN MX 10 mx-plain
mx-plain     IN A  127.0.0.6
plainfirst   IN MX 10 mx-plain
refused      IN MX 10 mx-refused
mx-refused   IN A  127.0.0.11
plainfirst   IN MX 20 mx-valid
notlsa       IN MX 10 mx-notlsa
mx-notlsa    IN A  127.0.0.2
cname        IN MX 10 alias
alias        IN CNAME mx-valid
cname2       IN MX 10 alias2
alias2       IN CNAME mx-notlsa
fulltable    IN MX 10 mx-fulltable
mx-fulltable IN A  127.0.0.20
mx-fulltable IN AAAA ::1
cname3       IN MX 10 alias3
alias3       IN CNAME mx.insecure.test.
cname4       IN MX 10 alias4
alias4       IN CNAME mx.insecure.test.
multi        IN MX 10 mx-mismatch
multi        IN MX 20 mx-selfsigned
insecure     IN MX 10 mx.insecure.test.
bogus        IN MX 10 mx-bogus
mx-bogus     IN A  127.0.0.2
bogus2       IN MX 10 mx-bogus
bogus2       IN MX 20 mx-valid
bogusmx      IN MX 10 mx-valid
implicit     IN A  127.0.0.2
ee301        IN MX 10 mx-ee301
mx-ee301     IN A  127.0.0.5
ee312        IN MX 10 mx-ee312
mx-ee312     IN A  127.0.0.5
ee300        IN MX 10 mx-ee300
mx-ee300     IN A  127.0.0.5
ee310        IN MX 10 mx-ee310
mx-ee310     IN A  127.0.0.5
tworec       IN MX 10 mx-tworec
mx-tworec    IN A  127.0.0.2
unusable     IN MX 10 mx-unusable
mx-unusable  IN A  127.0.0.5
unusableplain IN MX 10 mx-unusable-plain
mx-unusable-plain IN A 127.0.0.6
ta           IN MX 10 mx-ta
mx-ta        IN A  127.0.0.10
tacname      IN MX 10 mx-ta-cname
mx-ta-cname  IN CNAME ta-target
ta-target    IN A  127.0.0.10
taalias      IN MX 10 ta-alias
ta-alias     IN CNAME mx-ta
taspki       IN MX 10 mx-ta-spki
mx-ta-spki   IN A  127.0.0.10
taroot       IN MX 10 mx-ta-root
mx-ta-root   IN A  127.0.0.10
tabad        IN MX 10 mx-tabad
mx-tabad     IN A  127.0.0.8
pkix         IN MX 10 mx-pkix
mx-pkix      IN A  127.0.0.10
stsdane      IN MX 10 mx-expired
_mta-sts.stsdane IN TXT "v=STSv1; id=dane1;"
stspkix      IN MX 10 mx-pkix
_mta-sts.stspkix IN TXT "v=STSv1; id=pkix1;"
stsnomatch   IN MX 10 mx-pkix
_mta-sts.stsnomatch IN TXT "v=STSv1; id=nomatch1;"
"""

INSECURE_RECORDS = """\
mx           IN A  127.0.0.2
domain       IN MX 10 mx-valid.dane.test.
mismatch     IN MX 10 mx-mismatch.dane.test.
"""


def tlsa_lines(recs, zone):
    return "".join("%s IN TLSA %d %d %d %s\n" % (o, u, s, m, d)
                   for (o, u, s, m, d) in recs if o.endswith("." + zone))


def keygen(p, ksk):
    argv = [which("ldns-keygen"), "-a", "ECDSAP256SHA256"] + (["-k"] if ksk else []) + \
        [ZONE.rstrip(".")]
    base = must(argv, "ldns-keygen", cwd=p.keys).decode().strip()
    if not re.fullmatch(r"K[\w.-]+\+013\+\d+", base):
        raise PeerError("ldns-keygen printed %r" % base)
    return os.path.join(p.keys, base)


def corrupt_rrsig(path, owner, covered):
    """Flip one byte of the signature of the RRSIG(s) covering owner/covered.

    ldns-signzone writes one RR a line:
      OWNER TTL IN RRSIG COVERED ALG LABELS OTTL EXP INC KEYTAG SIGNER BASE64
    The ECDSA signature is r||s (64 bytes); changing a byte of r makes it
    invalid for certain (unlike editing a base64 character, which can hit
    only padding bits)."""
    out, n = [], 0
    with open(path) as fp:
        for line in fp:
            f = line.split()
            if (len(f) >= 13 and f[0].lower() == owner and f[3] == "RRSIG"
                    and f[4] == covered):
                sig = bytearray(base64.b64decode("".join(f[12:])))
                sig[len(sig) // 4] ^= 0xFF
                line = "\t".join(f[:12] + [base64.b64encode(bytes(sig)).decode()]) + "\n"
                n += 1
            out.append(line)
    if n != 1:
        raise PeerError("expected 1 RRSIG %s for %s in %s, found %d"
                        % (covered, owner, path, n))
    with open(path + ".tmp", "w") as fp:
        fp.writelines(out)
    os.rename(path + ".tmp", path)


def build_zones(p, recs, port):
    os.makedirs(p.keys)
    ksk = keygen(p, True)
    zsk = keygen(p, False)
    with open(p.zone, "w") as fp:
        fp.write(ZONE_HEAD.format(origin=ZONE) + DANE_RECORDS + tlsa_lines(recs, ZONE))
    with open(p.insecure, "w") as fp:
        fp.write(ZONE_HEAD.format(origin=INSECURE_ZONE) + INSECURE_RECORDS
                 + tlsa_lines(recs, INSECURE_ZONE))
    now = int(time.time())
    must([which("ldns-signzone"), "-i", str(now - SIG_INCEPTION_AGO),
          "-e", str(now + SIG_LIFETIME), "-o", ZONE, "-f", p.signed, p.zone, zsk, ksk],
         "ldns-signzone")
    corrupt_rrsig(p.signed, tlsa_owner(BOGUS_TLSA_HOST, port), "TLSA")
    corrupt_rrsig(p.signed, absolute(BOGUS_MX_DOMAIN), "MX")
    # trust anchor: the KSK's DS (SHA-256), as written by ldns-keygen
    shutil.copyfile(ksk + ".ds", p.anchor)
    with open(p.tlsa, "w") as fp:
        fp.write("# TLSA records in use (OWNER USAGE SELECTOR MTYPE HEX)\n")
        for r in recs:
            fp.write("%s %d %d %d %s\n" % r)


# --------------------------------------------------------------------------
# unbound

UNBOUND_CONF = """\
# generated by tests/peers/dnssec.py -- private instance, loopback only
server:
    verbosity: 1
    interface: {addr}
    port: {port}
    do-ip4: yes
    do-ip6: no
    do-udp: yes
    do-tcp: yes
    num-threads: 1
    access-control: 127.0.0.0/8 allow
    # never send anything off the machine (no upstream exists anyway)
    outgoing-interface: {addr}
    # no chroot, no privilege drop, no daemon, no syslog, no systemd
    chroot: ""
    username: ""
    directory: "{p.dir}"
    pidfile: "{p.unbound_pid}"
    do-daemonize: no
    use-syslog: no
    use-systemd: no
    logfile: "{p.log}"
    log-time-ascii: yes
    # validation: the anchor is dane.test's own KSK (no root.key, no
    # auto-trust-anchor-file, no RFC 8145 key tag queries)
    module-config: "validator iterator"
    trust-anchor-file: "{p.anchor}"
    trust-anchor-signaling: no
    domain-insecure: "{insecure}"
    val-log-level: 2
    # "test." is one of unbound's default (static) local zones; everything
    # but our two zones is refused, so the root is never contacted
    local-zone: "." refuse
    local-zone: "{zone}" transparent
    local-zone: "{insecure}" transparent

remote-control:
    control-enable: no

# for-upstream yes + for-downstream no: the zone data is used as if fetched
# from an authority, then validated (AD set), not served as authoritative
auth-zone:
    name: "{zone}"
    zonefile: "{p.signed}"
    for-downstream: no
    for-upstream: yes
    fallback-enabled: no

auth-zone:
    name: "{insecure}"
    zonefile: "{p.insecure}"
    for-downstream: no
    for-upstream: yes
    fallback-enabled: no
"""


def apparmor_confines_unbound():
    try:
        with open("/sys/kernel/security/apparmor/profiles") as fp:
            return any(l.startswith("unbound ") and "(enforce)" in l for l in fp)
    except OSError:
        return False


def unbound_binary(p):
    """The unbound to run.  Debian's AppArmor profile (attached by path to
    /usr/sbin/unbound) only allows reading /etc/unbound and /var/lib/unbound,
    so where it is enforced we run a copy of the binary from DIR/bin (a path
    no profile attaches to).  UNTESTED here: AppArmor is off on this host."""
    prog = os.environ.get("TM_DNSSEC_UNBOUND") or which("unbound")
    if not prog:
        raise PeerMissing("dnssec peer missing: unbound (Debian package unbound)")
    if os.path.realpath(prog) == "/usr/sbin/unbound" and apparmor_confines_unbound():
        os.makedirs(p.bin, exist_ok=True)
        copy = os.path.join(p.bin, "unbound")
        shutil.copy2(prog, copy)
        log("AppArmor confines /usr/sbin/unbound: running the copy %s" % copy)
        return copy
    return prog


def log_tail(p, n=15):
    out = []
    for f in (p.stderr, p.log):
        try:
            with open(f, errors="replace") as fp:
                lines = fp.read().splitlines()[-n:]
        except OSError:
            continue
        if lines:
            out.append("--- %s:\n%s" % (f, "\n".join(lines)))
    return "\n".join(out)


def start_unbound(p, port):
    with open(p.conf, "w") as fp:
        fp.write(UNBOUND_CONF.format(p=p, addr=ADDR, port=port, zone=ZONE,
                                     insecure=INSECURE_ZONE))
    checkconf = which("unbound-checkconf")
    if checkconf:
        must([checkconf, p.conf], "unbound-checkconf")
    prog = unbound_binary(p)
    for f in (p.log, p.stderr):
        if os.path.exists(f):
            os.unlink(f)
    with open(p.stderr, "wb") as err:
        proc = subprocess.Popen([prog, "-d", "-c", p.conf], stdin=subprocess.DEVNULL,
                                stdout=err, stderr=err, start_new_session=True,
                                close_fds=True)
    try:
        with open(p.pid + ".tmp", "w") as fp:
            fp.write("%d\n" % proc.pid)
        os.rename(p.pid + ".tmp", p.pid)
        return wait_ready(p, port, proc)
    except BaseException:
        kill_pid(proc.pid, "unbound")
        raise


def wait_ready(p, port, proc):
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        rc = proc.poll()
        if rc is not None:
            tail = log_tail(p)
            msg = "unbound exited with %d during start-up\n%s" % (rc, tail)
            if "Address already in use" in tail:
                msg = "port %d in use\n%s" % (port, msg)
            raise PeerError(msg)
        try:
            r = query(ADDR, port, ZONE, "SOA", timeout=0.2, tries=1)
            if r.rcode == "NOERROR" and "ad" in r.flags:
                return proc
            if r.rcode != "SERVFAIL":
                raise PeerError("unbound answers SOA %s with %s %s\n%s"
                                % (ZONE, r.rcode, sorted(r.flags), log_tail(p)))
        except (socket.timeout, ConnectionRefusedError):
            pass
        if time.monotonic() > deadline:
            raise PeerError("unbound not ready after %.0fs\n%s"
                            % (READY_TIMEOUT, log_tail(p)))
        time.sleep(0.02)


def stop_recorded(p):
    """Stop the unbound whose PID we recorded, if it is still ours."""
    stop_by_pidfile(p.pid, p.conf, "unbound", whole_arg=True, not_ours="not ours")
    for f in (p.pid, p.env):
        try:
            os.unlink(f)
        except OSError:
            pass


# --------------------------------------------------------------------------
# a minimal DNS client (EDNS0 with DO, optional CD; UDP with TCP fallback)

FLAGS = [("qr", 0x8000), ("aa", 0x0400), ("tc", 0x0200), ("rd", 0x0100),
         ("ra", 0x0080), ("ad", 0x0020), ("cd", 0x0010)]


class Answer:
    def __init__(self):
        self.rcode = None
        self.flags = set()
        self.answer = []       # [(name, type, data)]
        self.authority = []
        self.do = False        # DO echoed in the response's OPT

    def data(self, rtype, name=None):
        return [d for (n, t, d) in self.answer
                if t == rtype and (name is None or n == name.lower().rstrip("."))]

    def __str__(self):
        s = "%s flags=%s do=%s\n" % (self.rcode, " ".join(
            f for f, _ in FLAGS if f in self.flags), self.do)
        for sec, rrs in (("AN", self.answer), ("NS", self.authority)):
            for n, t, d in rrs:
                s += "  %s %s %s %s\n" % (sec, n, t, d)
        return s.rstrip("\n")


def decode_name(msg, off):
    return peerlib.decode_name(msg, off, lower=True)


def decode_rdata(msg, off, rtype, rdlen):
    rd = msg[off:off + rdlen]
    name = TYPE_NAMES.get(rtype, "TYPE%d" % rtype)
    if rtype == 1:
        return name, socket.inet_ntop(socket.AF_INET, rd)
    if rtype == 28:
        return name, socket.inet_ntop(socket.AF_INET6, rd)
    if rtype in (2, 5):
        return name, decode_name(msg, off)[0]
    if rtype == 15:
        return name, (struct.unpack("!H", rd[:2])[0], decode_name(msg, off + 2)[0])
    if rtype == 52:
        return name, (rd[0], rd[1], rd[2], rd[3:].hex())
    if rtype == 46:
        covered, alg, labels, _, exp, inc, tag = struct.unpack("!HBBIIIH", rd[:18])
        return name, "%s alg %d tag %d" % (TYPE_NAMES.get(covered, covered), alg, tag)
    if rtype == 6:
        mname, o = decode_name(msg, off)
        rname, o = decode_name(msg, o)
        return name, "%s %s %d" % (mname, rname, struct.unpack("!I", msg[o:o + 4])[0])
    if rtype == 47:
        return name, decode_name(msg, off)[0]
    return name, rd.hex()


def parse_answer(msg, qid):
    if len(msg) < 12:
        raise ValueError("short reply")
    rid, flags, qd, an, ns, ar = struct.unpack("!HHHHHH", msg[:12])
    if rid != qid:
        raise ValueError("id mismatch")
    a = Answer()
    a.flags = {f for f, bit in FLAGS if flags & bit}
    rcode = flags & 0xF
    off = 12
    for _ in range(qd):
        _, off = decode_name(msg, off)
        off += 4
    for i in range(an + ns + ar):
        name, off = decode_name(msg, off)
        rtype, rclass, ttl, rdlen = struct.unpack("!HHIH", msg[off:off + 10])
        off += 10
        if rtype == 41:
            rcode |= (ttl >> 24) << 4
            a.do = bool(ttl & 0x8000)
        else:
            t, d = decode_rdata(msg, off, rtype, rdlen)
            if i < an:
                a.answer.append((name, t, d))
            elif i < an + ns:
                a.authority.append((name, t, d))
        off += rdlen
    a.rcode = RCODES.get(rcode, "RCODE%d" % rcode)
    return a


def query(server, port, name, qtype, do=True, cd=False, tcp=False, timeout=2.0, tries=2):
    qt = TYPES[qtype.upper()] if isinstance(qtype, str) else qtype
    last = None
    for _ in range(tries):
        qid = random.getrandbits(16)
        flags = 0x0100 | (0x0010 if cd else 0)
        q = struct.pack("!HHHHHH", qid, flags, 1, 0, 0, 1) + encode_name(name) + \
            struct.pack("!HH", qt, 1)
        # OPT: root name, type 41, class = UDP size, TTL = ext-rcode/version/DO
        q += b"\0" + struct.pack("!HHIH", 41, 1232, 0x8000 if do else 0, 0)
        try:
            if tcp:
                msg = _tcp_exchange(server, port, q, timeout)
            else:
                msg = _udp_exchange(server, port, q, qid, timeout)
            a = parse_answer(msg, qid)
            if "tc" in a.flags and not tcp:
                return query(server, port, name, qtype, do, cd, True, timeout, tries)
            return a
        except socket.timeout as e:
            last = e
    raise last


def _udp_exchange(server, port, q, qid, timeout):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.connect((server, port))
        s.send(q)
        deadline = time.monotonic() + timeout
        while True:
            s.settimeout(max(0.001, deadline - time.monotonic()))
            msg = s.recv(65535)
            if len(msg) >= 2 and struct.unpack("!H", msg[:2])[0] == qid:
                return msg


def _tcp_exchange(server, port, q, timeout):
    deadline = time.monotonic() + timeout
    with socket.create_connection((server, port), timeout=timeout) as s:
        s.sendall(struct.pack("!H", len(q)) + q)
        buf = b""
        while len(buf) < 2 or len(buf) < 2 + struct.unpack("!H", buf[:2])[0]:
            s.settimeout(max(0.001, deadline - time.monotonic()))
            chunk = s.recv(65535)
            if not chunk:
                raise ValueError("TCP connection closed early")
            buf += chunk
        return buf[2:2 + struct.unpack("!H", buf[:2])[0]]


# --------------------------------------------------------------------------
# commands

def check_prereqs():
    missing = [pkg for prog, pkg in (("unbound", "unbound"), ("ldns-keygen", "ldnsutils"),
                                     ("ldns-signzone", "ldnsutils"), ("openssl", "openssl"))
               if not which(prog)]
    if missing:
        raise PeerMissing("dnssec peer missing: Debian package(s) %s"
                          % " ".join(sorted(set(missing))))


def smtp_port_of(args):
    """The port in the TLSA owner names: --smtp-port, else peers.py's
    TM_TEST_PORT (dnssec.py run inside peers.py run), else 25."""
    port = args.smtp_port
    if port is None:
        try:
            port = int(os.environ.get("TM_TEST_PORT") or 25)
        except ValueError:
            raise PeerError("TM_TEST_PORT is not a number: %r"
                            % os.environ.get("TM_TEST_PORT")) from None
    if not 0 < port < 65536:
        raise PeerError("--smtp-port must be 1-65535")
    return port


def do_start(args):
    t0 = time.monotonic()
    p = Paths(args.dir)
    check_prereqs()
    if re.search(r"[\s\"]", p.dir):
        raise PeerError("--dir must not contain whitespace or quotes: %r" % p.dir)
    if args.port is not None and not 1024 < args.port < 65536:
        raise PeerError("--port must be a high port (1025-65535)")
    if args.port is not None and not port_free(args.port):
        raise PeerError("port %d on %s is in use (UDP or TCP)" % (args.port, ADDR))
    smtp_port = smtp_port_of(args)
    if args.certdir is None and os.environ.get("TM_TEST_CERTDIR"):
        args.certdir = os.environ["TM_TEST_CERTDIR"]     # peers.py's certificates
    os.makedirs(p.dir, exist_ok=True)
    os.chmod(p.dir, 0o755)
    stop_recorded(p)                  # stale unbound from an earlier start
    clean(p)
    proc = None
    try:
        t1 = time.monotonic()
        if args.tlsa:
            recs = read_tlsa_file(args.tlsa, smtp_port)
            certdir = os.path.abspath(args.certdir) if args.certdir else ""
        else:
            if args.certdir:
                certdir = os.path.abspath(args.certdir)
            else:
                certdir = p.certs
                try:
                    certs.CertBuilder(certdir, args.key_type, "peers").build()
                except certs.OpensslMissing as e:
                    raise PeerMissing(str(e)) from None
                except certs.CertError as e:
                    raise PeerError(str(e)) from None
            recs = default_tlsa(certdir, smtp_port)
        t_certs = time.monotonic() - t1
        t1 = time.monotonic()
        build_zones(p, recs, smtp_port)
        t_sign = time.monotonic() - t1
        t1 = time.monotonic()
        attempts = 1 if args.port is not None else 3
        tried = set()
        for attempt in range(attempts):
            port = args.port if args.port is not None else choose_port(tried | {smtp_port})
            tried.add(port)
            try:
                proc = start_unbound(p, port)
                break
            except PeerError as e:
                stop_recorded(p)
                if attempt + 1 < attempts and "in use" in str(e):
                    log("port %d collision, retrying" % port)
                    continue
                raise
        t_unbound = time.monotonic() - t1
    except BaseException:
        stop_recorded(p)
        raise
    env = {
        "TM_DNSSEC_RESOLVER": "%s:%d" % (ADDR, port),
        "TM_DNSSEC_ZONE": ZONE.rstrip("."),
        "TM_DNSSEC_INSECURE_ZONE": INSECURE_ZONE.rstrip("."),
        "TM_DNSSEC_DIR": p.dir,
        "TM_DNSSEC_ANCHOR": p.anchor,
        "TM_DNSSEC_TLSA": p.tlsa,
        "TM_DNSSEC_SMTP_PORT": str(smtp_port),
        "TM_DNSSEC_CERTDIR": certdir,
        "TM_DNSSEC_LOG": p.log,
        "TM_DNSSEC_PID": str(proc.pid),
    }
    write_env(p.env, env)
    log("unbound pid %d up on %s in %.2fs (certs+TLSA %.2fs, keys+sign %.2fs, "
        "unbound %.2fs), env in %s" % (proc.pid, env["TM_DNSSEC_RESOLVER"],
                                        time.monotonic() - t0, t_certs, t_sign,
                                        t_unbound, p.env))
    return env, proc


def cmd_start(args):
    return peerlib.start_command(lambda: do_start(args))


def cmd_stop(args):
    stop_recorded(Paths(args.dir))
    return 0


def cmd_run(args):
    p = Paths(args.dir)
    return peerlib.run_command(args.cmd, lambda: do_start(args)[0],
                               lambda: stop_recorded(p), "unbound", ignore_sigint=True)


def resolver(p):
    host, port = read_env(p.env)["TM_DNSSEC_RESOLVER"].rsplit(":", 1)
    return host, int(port)


def cmd_query(args):
    p = Paths(args.dir)
    host, port = resolver(p)
    try:
        a = query(host, port, args.name, args.type, do=not args.no_do, cd=args.cd,
                  tcp=args.tcp, timeout=args.timeout)
    except (OSError, ValueError) as e:
        print("error: %r" % e)
        return 1
    print(a)
    return 0


def cmd_selftest(args):
    p = Paths(args.dir)
    env = read_env(p.env)
    host, port = resolver(p)
    smtp_port = int(env.get("TM_DNSSEC_SMTP_PORT", "25"))
    check = peerlib.Checks()
    tlsa = {}
    with open(p.tlsa) as fp:
        for line in fp:
            f = line.split()
            if f and not f[0].startswith("#"):
                tlsa.setdefault(f[0], []).append((int(f[1]), int(f[2]), int(f[3]), f[4]))

    def q(name, qtype, **kw):
        try:
            return query(host, port, name, qtype, **kw)
        except (OSError, ValueError) as e:
            a = Answer()
            a.rcode = "ERROR %r" % e
            return a

    def show(a, rtype):
        return "%s%s %r" % (a.rcode, " AD" if "ad" in a.flags else "",
                            [d for (_, t, d) in a.answer if t == rtype])

    Z = ZONE.rstrip(".")
    bogus_tlsa = tlsa_owner(BOGUS_TLSA_HOST, smtp_port)
    owner = lambda h: tlsa_owner(h, smtp_port)
    # secure data: AD set, RRSIGs present
    a = q(Z, "SOA")
    check(a.rcode == "NOERROR" and "ad" in a.flags and a.do, "SOA %s: %s" % (Z, show(a, "SOA")))
    a = q(Z, "DNSKEY")
    check(a.rcode == "NOERROR" and "ad" in a.flags and len(a.data("DNSKEY")) == 2,
          "DNSKEY %s: AD, 2 keys (%s)" % (Z, show(a, "RRSIG")))
    # every MX RRset of the zone file, signed
    mx_expect = {}
    addr_expect = {}
    for line in DANE_RECORDS.splitlines():
        f = line.split()
        if len(f) == 5 and f[2] == "MX" and not f[4].endswith("."):
            mx_expect.setdefault(f[0], []).append((int(f[3]), "%s.%s" % (f[4], Z)))
        elif len(f) == 4 and f[2] == "A":
            addr_expect[f[0]] = f[3]
    for dom, want in sorted(mx_expect.items()):
        name = "%s.%s" % (dom, Z)
        a = q(name, "MX")
        if dom == BOGUS_MX_DOMAIN:
            check(a.rcode == "SERVFAIL" and not a.answer,
                  "MX %s (corrupted RRSIG): SERVFAIL (%s)" % (name, a.rcode))
            a = q(name, "MX", cd=True)
            check(a.rcode == "NOERROR" and "ad" not in a.flags and sorted(a.data("MX")) == want,
                  "MX %s with CD: the data, no AD (%s)" % (name, show(a, "MX")))
            continue
        check(a.rcode == "NOERROR" and "ad" in a.flags and sorted(a.data("MX")) == want
              and any(d.startswith("MX ") for d in a.data("RRSIG")),
              "MX %s: AD + RRSIG, %s" % (name, show(a, "MX")))
    a = q("insecure." + Z, "MX")
    check(a.rcode == "NOERROR" and "ad" in a.flags and a.data("MX") == [(10, "mx.insecure.test")],
          "MX insecure.%s (secure MX -> insecure host): %s" % (Z, show(a, "MX")))
    for h, addr in sorted(addr_expect.items()):
        a = q("%s.%s" % (h, Z), "A")
        check(a.rcode == "NOERROR" and "ad" in a.flags and a.data("A") == [addr],
              "A %s.%s: %s" % (h, Z, show(a, "A")))
    a = q("implicit." + Z, "MX")
    check(a.rcode == "NOERROR" and "ad" in a.flags and not a.answer,
          "MX implicit.%s: secure NODATA (%s)" % (Z, show(a, "MX")))
    for o, want in sorted(tlsa.items()):
        if o == bogus_tlsa or not o.endswith("." + ZONE):
            continue
        a = q(o, "TLSA")
        check(a.rcode == "NOERROR" and "ad" in a.flags and sorted(a.data("TLSA")) == sorted(want),
              "TLSA %s: AD, matches tlsa.txt (%s)" % (o.rstrip("."), show(a, "TLSA")))
    check(owner("mx-valid") in tlsa, "tlsa.txt has %s (the SMTP port %d)"
          % (owner("mx-valid").rstrip("."), smtp_port))
    # over TCP; and without DO (and without AD in the query) no AD (RFC 6840)
    a = q(owner("mx-valid"), "TLSA", tcp=True)
    check(a.rcode == "NOERROR" and "ad" in a.flags, "TLSA %s over TCP: %s"
          % (owner("mx-valid").rstrip("."), show(a, "TLSA")))
    a = q("valid." + Z, "MX", do=False)
    check(a.rcode == "NOERROR" and "ad" not in a.flags and not a.data("RRSIG"),
          "MX valid without DO: no AD, no RRSIG (%s)" % show(a, "MX"))
    # secure denial
    for o in (owner("mx-notlsa"), owner("alias"), owner("mx-pkix"), owner("ta-alias"),
              owner("mx-ta-cname"), "_25._tcp.mx-valid." + ZONE):
        if o not in tlsa:
            a = q(o, "TLSA")
            check(a.rcode == "NXDOMAIN" and "ad" in a.flags and not a.answer,
                  "TLSA %s (not in tlsa.txt): secure NXDOMAIN (%s)"
                  % (o.rstrip("."), show(a, "TLSA")))
    a = q("mx-valid." + Z, "AAAA")
    check(a.rcode == "NOERROR" and "ad" in a.flags and not a.answer,
          "AAAA mx-valid: secure NODATA (%s)" % show(a, "AAAA"))
    a = q("nosuch." + Z, "MX")
    check(a.rcode == "NXDOMAIN" and "ad" in a.flags, "MX nosuch.%s: %s" % (Z, show(a, "MX")))
    # CNAME'd MX hosts
    for alias, target, addr in (("alias", "mx-valid", "127.0.0.2"),
                                ("alias2", "mx-notlsa", "127.0.0.2"),
                                ("mx-ta-cname", "ta-target", "127.0.0.10"),
                                ("ta-alias", "mx-ta", "127.0.0.10")):
        a = q("%s.%s" % (alias, Z), "A")
        check(a.rcode == "NOERROR" and "ad" in a.flags
              and a.data("CNAME", "%s.%s" % (alias, Z)) == ["%s.%s" % (target, Z)]
              and a.data("A", "%s.%s" % (target, Z)) == [addr],
              "A %s.%s: CNAME %s + A, AD (%s)" % (alias, Z, target, a.answer))
    # insecure
    I = INSECURE_ZONE.rstrip(".")
    a = q("mx." + I, "A")
    check(a.rcode == "NOERROR" and "ad" not in a.flags and a.data("A") == ["127.0.0.2"],
          "A mx.%s: insecure, no AD (%s)" % (I, show(a, "A")))
    for o, want in sorted(tlsa.items()):
        if o.endswith("." + INSECURE_ZONE):
            a = q(o, "TLSA")
            check(a.rcode == "NOERROR" and "ad" not in a.flags
                  and sorted(a.data("TLSA")) == sorted(want),
                  "TLSA %s: answered, no AD (%s)" % (o.rstrip("."), show(a, "TLSA")))
    for dom, target in (("domain", "mx-valid"), ("mismatch", "mx-mismatch")):
        a = q("%s.%s" % (dom, I), "MX")
        check(a.rcode == "NOERROR" and "ad" not in a.flags
              and a.data("MX") == [(10, "%s.%s" % (target, Z))],
              "MX %s.%s: insecure MX RRset (%s)" % (dom, I, show(a, "MX")))
    # bogus
    a = q(bogus_tlsa, "TLSA")
    check(a.rcode == "SERVFAIL" and not a.answer,
          "TLSA %s: SERVFAIL (%s)" % (bogus_tlsa.rstrip("."), a.rcode))
    a = q(bogus_tlsa, "TLSA", cd=True)
    check(a.rcode == "NOERROR" and "ad" not in a.flags and len(a.data("TLSA")) == 1,
          "TLSA %s with CD: the data, no AD (%s)" % (bogus_tlsa.rstrip("."), show(a, "TLSA")))
    # outside our zones: refused at once, no recursion
    t0 = time.monotonic()
    a = q("example.com", "A")
    check(a.rcode == "REFUSED", "A example.com: %s in %.3fs" % (a.rcode, time.monotonic() - t0))
    a = q("valid.tm.test", "MX")
    check(a.rcode in ("REFUSED", "NXDOMAIN") and not a.answer,
          "MX valid.tm.test (dnsmasq's zone, not ours): %s" % a.rcode)
    # the process
    pid = int(env["TM_DNSSEC_PID"])
    check(pid_alive(pid) and p.conf.encode() in proc_cmdline(pid),
          "unbound pid %d runs with %s" % (pid, p.conf))
    return check.done()


def main(argv):
    def start_opts(sp):
        sp.add_argument("--port", type=int, default=None,
                        help="resolver port on 127.0.0.1 (default: a free one)")
        sp.add_argument("--certdir", default=None,
                        help="take the certificates (valid, selfsigned, expired, "
                             "ca, intermediate-ca .pem) from here instead of "
                             "generating DIR/certs (default: $TM_TEST_CERTDIR if set)")
        sp.add_argument("--smtp-port", type=int, default=None,
                        help="port of the TLSA owner names _PORT._tcp.HOST "
                             "(default: $TM_TEST_PORT if set, else 25)")
        sp.add_argument("--tlsa", default=None,
                        help="file of TLSA records: OWNER USAGE SELECTOR MTYPE HEX")
        peerlib.add_key_type(sp, "certificate key type for the generated certs")

    ap, sub = peerlib.command_parser(__doc__, start_opts)
    sp = sub.add_parser("selftest")
    sp.add_argument("--dir", required=True)
    sp = sub.add_parser("query")
    sp.add_argument("--dir", required=True)
    sp.add_argument("--cd", action="store_true", help="set CD (checking disabled)")
    sp.add_argument("--no-do", action="store_true", help="clear the DO bit")
    sp.add_argument("--tcp", action="store_true")
    sp.add_argument("--timeout", type=float, default=2.0)
    sp.add_argument("name")
    sp.add_argument("type", nargs="?", default="A")
    args = ap.parse_args(argv)
    return {"start": cmd_start, "stop": cmd_stop, "run": cmd_run,
            "selftest": cmd_selftest, "query": cmd_query}[args.command](args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
