"""tlsmail - deliver email to a domain's MX hosts with opportunistic TLS.

A thin, typed ctypes binding over libtlsmail (include/tlsmail.h)::

    import tlsmail

    st = tlsmail.deliver("me@example.com", "you@example.org",
                         b"Subject: hi\\r\\n\\r\\nHello.\\r\\n")
    print(st.result, st.tls, st.cert_verified, st.mx_host)

Errors: a call **returns** a DeliveryStatus for every SMTP outcome -
delivered, deferred, uncertain or bounced (look at ``status.result``; the
library's error code is ``status.error``).  It **raises** a TlsmailError only
when the call itself was wrong or could not run: invalid arguments or
addresses (InvalidArgument, also a ValueError), out of memory, an unreadable
or empty trust store (CAFileError, also from Context.reload_ca()), a session
used in the wrong state, a settings file with a syntax error, or an
exception raised by your message reader (MessageReadError, with your
exception as ``__cause__``).  Session.open() and Session.starttls() have
no message outcome to return, so when they fail they raise DeliveryError
carrying the status: Deferred, Bounced or Uncertain by its result,
TLSRequired (a Deferred) for TM_ETLSREQUIRED.  To have a message outcome
other than delivered raised the same way, pass ``check=True`` to deliver(),
deliver_async() or Session.send(), or call ``status.raise_for_result()``::

    try:
        tlsmail.deliver(sender, rcpt, data, check=True)
    except tlsmail.Deferred:      # includes TLSRequired: retry later
        ...
    except tlsmail.Bounced:       # permanent: do not retry
        ...
    except tlsmail.Uncertain:     # may have arrived: retrying may duplicate
        ...

Every call blocks the calling thread for at most the context's timeouts and
releases the GIL while it runs, so deliveries on several threads sharing one
Context run in parallel.  A Session must be used by one thread at a time.
In asyncio code, ``await tlsmail.deliver_async(...)`` runs deliver() in an
executor so that the event loop keeps running meanwhile.

MTA-STS (RFC 8461, docs/mta-sts.md) is on by default: a delivery to a
domain's MX hosts follows the domain's published policy, and the status
says which (``status.mta_sts``).  Context(mta_sts=False) turns it off.
"""

from __future__ import annotations

import asyncio
import ctypes
import enum
import functools
import json
import os
import threading
from dataclasses import dataclass, field
from typing import IO, Any, BinaryIO, Callable, Dict, List, Optional, Sequence, Union

from . import _ffi
from ._ffi import lib as _lib

__all__ = [
    "deliver", "Context", "Session", "Policy", "DeliveryStatus", "RecipientStatus",
    "Result", "TLSFailure", "PolicySource", "Floor", "MtaSts", "LogLevel", "ErrorCode",
    "TlsmailError", "InvalidArgument", "OutOfMemory", "CAFileError", "SessionStateError",
    "MessageReadError", "SettingsSyntaxError", "StsCacheSyntaxError", "DeliveryError",
    "Deferred", "Bounced", "Uncertain", "TLSRequired", "deliver_async",
    "default_context", "version", "tls_backend", "strerror",
]

Data = Union[bytes, bytearray, memoryview, str, BinaryIO, IO[bytes]]
Recipients = Union[str, Sequence[str]]


def version() -> str:
    """The version of the loaded libtlsmail, e.g. "0.2.0"."""
    return _lib.tm_version().decode()


def tls_backend() -> str:
    """The TLS library libtlsmail was built against, e.g. "mbed TLS 2.28.3"."""
    return _lib.tm_tls_backend().decode()


def strerror(code: int) -> str:
    """tm_strerror(): the English text of a tm_error value."""
    return _lib.tm_strerror(int(code)).decode()


# ---------------------------------------------------------------------------
# Enumerations (values are the header's, names its suffixes)


class _Named(enum.IntEnum):
    def __str__(self) -> str:  # "delivered", "message", "tls"...
        return self.name.lower().replace("_", "-")


class Result(_Named):
    """tm_result: the class of a delivery or of one recipient."""
    NONE = 0
    DELIVERED = 1
    DEFERRED = 2
    UNCERTAIN = 3
    BOUNCED = 4


class TLSFailure(_Named):
    """tm_tls_failure: why TLS is not in use."""
    NONE = 0
    NOT_OFFERED = 1
    REFUSED = 2
    HANDSHAKE = 3
    CERTIFICATE = 4
    NOT_TRIED = 5


class PolicySource(_Named):
    """tm_policy_source: where a flag of the applied policy came from."""
    DEFAULT = 0
    MESSAGE = 1
    SENDING_DOMAIN = 2
    RECIPIENT_FLOOR = 3


class Floor(_Named):
    """tm_floor: the least TLS mail to a recipient domain must travel with.
    DANE: only over TLS that DNSSEC-signed TLSA records authenticated
    (Postfix's "dane-only"); nothing is delivered while DANE is off."""
    NONE = 0
    TLS = 1
    VERIFIED = 2
    DANE = 3


class MtaSts(_Named):
    """tm_mta_sts: what MTA-STS (RFC 8461) made of the recipient domain.
    ``str()`` gives the library's name (tm_mta_sts_name), the value
    DeliveryStatus.mta_sts holds: "off", "no-policy", "none", "testing",
    "enforce", "fetch-failed"."""
    OFF = 0           # off in the context, or an explicit host
    NO_POLICY = 1     # no usable _mta-sts TXT record and nothing cached
    NONE = 2          # a policy in mode "none": as without one
    TESTING = 3       # delivered under the normal policy; see mta_sts_would_refuse
    ENFORCE = 4       # only matching MX hosts, over PKIX-verified TLS, or deferred
    FETCH_FAILED = 5  # a TXT record, no policy fetched, none cached (see mta_sts_error)


class LogLevel(enum.IntEnum):
    """tm_log_level."""
    ERROR = 0
    WARNING = 1
    INFO = 2
    DEBUG = 3


class ErrorCode(enum.IntEnum):
    """tm_error (TM_OK and the negative TM_E* codes)."""
    OK = 0
    EINVAL = -1
    ENOMEM = -2
    EADDRESS = -3
    ECONNECT = -4
    ETIMEOUT = -5
    ECLOSED = -6
    EPROTOCOL = -7
    ETLS = -8
    ETLSREQUIRED = -9
    EREJECTED = -10
    EPARTIAL = -11
    EUNCERTAIN = -12
    ECONTENT = -13
    EREAD = -14
    ESTATE = -15
    ECAFILE = -16
    EDNS = -17
    ENODOMAIN = -18
    ENULLMX = -19
    ETOOMANY = -20
    EIO = -21
    EUTF8 = -22
    ENOTFOUND = -23
    ESYNTAX = -24


def _enum(cls: Any, value: int) -> Any:
    try:
        return cls(value)
    except ValueError:  # a newer library's value: keep the number
        return value


# ---------------------------------------------------------------------------
# Exceptions


class TlsmailError(Exception):
    """Base of every exception raised by this package.

    code    the tm_error value (negative int; compare with ErrorCode)
    status  the DeliveryStatus the call filled, or None
    """

    def __init__(self, code: int, message: Optional[str] = None,
                 status: Optional["DeliveryStatus"] = None) -> None:
        self.code = int(code)
        self.status = status
        text = message or strerror(code)
        if status is not None and status.description and status.description not in text:
            text = "%s: %s" % (text, status.description)
        super().__init__(text)

    @property
    def name(self) -> str:
        """"EINVAL", "ETLSREQUIRED"... (the tm_error name without TM_)."""
        try:
            return ErrorCode(self.code).name
        except ValueError:
            return str(self.code)


class InvalidArgument(TlsmailError, ValueError):
    """TM_EINVAL, TM_EADDRESS: the arguments are wrong."""


class OutOfMemory(TlsmailError, MemoryError):
    """TM_ENOMEM."""


class CAFileError(TlsmailError):
    """TM_ECAFILE: the trust store (ca_file, ca_path or the system store)
    could not be read or held no certificate; raised by Context() and
    Context.reload_ca() (after which the store in use stays)."""


class SessionStateError(TlsmailError):
    """TM_ESTATE: the session cannot be used for this call (closed, or its
    connection failed earlier: open a new one)."""


class MessageReadError(TlsmailError):
    """TM_EREAD: reading the message content failed; ``__cause__`` is the
    exception your file object raised.  Nothing was delivered."""


class SettingsSyntaxError(TlsmailError):
    """TM_ESYNTAX: a settings file line is malformed; ``line`` is 1-based."""

    def __init__(self, code: int, line: int, path: str) -> None:
        self.line = line
        self.path = path
        super().__init__(code, "%s:%d: %s" % (path, line, strerror(code)))


class StsCacheSyntaxError(SettingsSyntaxError):
    """TM_ESYNTAX from Context.sts_cache_load(): a line of the MTA-STS
    cache file is malformed (``line`` is 1-based); nothing was loaded."""


class DeliveryError(TlsmailError):
    """The message (or the session) did not get through; ``status`` says
    why.  Raised by Session.open() and Session.starttls() when no session
    could be made ready, and by deliver(check=True), deliver_async(check=True),
    Session.send(check=True) and DeliveryStatus.raise_for_result() for any
    result but delivered.  Always one of the subclasses below, except for a
    status with no result at all."""


class Deferred(DeliveryError):
    """Result deferred: a temporary failure (network, timeout, DNS, 4xx,
    TLS required but unavailable); try again later."""


class Bounced(DeliveryError):
    """Result bounced: a permanent failure (5xx, null MX, no such domain);
    do not try again."""


class Uncertain(DeliveryError):
    """Result uncertain: the end of data was sent and no complete reply
    came back, so the message may have arrived (RFC 1047).  Do not treat it
    as delivered; trying again may deliver it twice."""


class TLSRequired(Deferred):
    """TM_ETLSREQUIRED: the policy requires TLS and no MX host gave it (a
    Deferred, as the result is)."""


_RAISE: Dict[int, type] = {
    ErrorCode.EINVAL: InvalidArgument,
    ErrorCode.EADDRESS: InvalidArgument,
    ErrorCode.ETOOMANY: InvalidArgument,
    ErrorCode.ENOMEM: OutOfMemory,
    ErrorCode.ECAFILE: CAFileError,
    ErrorCode.ESTATE: SessionStateError,
    ErrorCode.EREAD: MessageReadError,
    ErrorCode.EIO: TlsmailError,
}


def _misuse(rc: int, status: Optional["DeliveryStatus"] = None) -> Optional[TlsmailError]:
    """The exception for a 'the call was wrong' code, or None."""
    cls = _RAISE.get(rc)
    return cls(rc, status=status) if cls is not None else None


def _check(rc: int) -> None:
    if rc != 0:
        raise _RAISE.get(rc, TlsmailError)(rc)


def _delivery_error(rc: int, status: "DeliveryStatus") -> DeliveryError:
    """The DeliveryError subclass for a status that is not delivered: by
    the error (TLSRequired), else by the result."""
    if rc == ErrorCode.ETLSREQUIRED or status.error == ErrorCode.ETLSREQUIRED:
        cls: type = TLSRequired
    else:
        cls = _BY_RESULT.get(status.result, DeliveryError)
    return cls(rc if rc != 0 else status.error, status=status)


_BY_RESULT: Dict[int, type] = {
    Result.DEFERRED: Deferred,
    Result.BOUNCED: Bounced,
    Result.UNCERTAIN: Uncertain,
}


# ---------------------------------------------------------------------------
# Policy


def _flag_to_c(v: Optional[bool]) -> int:
    if v is None:
        return _ffi.TM_UNSET
    return _ffi.TM_ON if v else _ffi.TM_OFF


def _flag_from_c(v: int) -> Optional[bool]:
    return None if v == 0 else v > 0


@dataclass
class Policy:
    """tm_policy.  Each flag is None (not set: falls through to the sending
    domain's setting, then off), True (TM_ON) or False (TM_OFF, which
    overrides a less specific True).

    require_tls          never deliver without TLS (verified unless skip_verify)
    skip_verify          accept any certificate and host name
    keep_unverified_tls  keep TLS with an unverified certificate instead of
                         reconnecting in plaintext (when TLS is not required)
    """
    require_tls: Optional[bool] = None
    skip_verify: Optional[bool] = None
    keep_unverified_tls: Optional[bool] = None

    def _to_c(self) -> _ffi.tm_policy:
        p = _ffi.tm_policy()
        _lib.tm_policy_init(ctypes.byref(p), _ffi.TM_POLICY_VERSION)
        p.require_tls = _flag_to_c(self.require_tls)
        p.skip_verify = _flag_to_c(self.skip_verify)
        p.keep_unverified_tls = _flag_to_c(self.keep_unverified_tls)
        return p

    @classmethod
    def _from_c(cls, p: _ffi.tm_policy) -> "Policy":
        return cls(_flag_from_c(p.require_tls), _flag_from_c(p.skip_verify),
                   _flag_from_c(p.keep_unverified_tls))


# ---------------------------------------------------------------------------
# Delivery status


def _s(b: bytes) -> str:
    return b.decode("utf-8", "replace")


@dataclass
class RecipientStatus:
    """tm_rcpt_status: the outcome for one recipient."""
    address: str
    result: Result
    code: int
    enhanced_code: str
    message: str

    @property
    def delivered(self) -> bool:
        return self.result == Result.DELIVERED


@dataclass
class DeliveryStatus:
    """tm_delivery_status, field for field (see include/tlsmail.h).

    ``policy`` is the policy applied after resolution (flags True/False);
    ``*_source`` say where each flag came from, ``floor`` which recipient
    floor applied.  ``recipients`` has one entry per recipient of the
    message (the library writes them into an array this binding passes as
    tm_message.rcpt_status); ``rcpt_count`` and ``rcpt_delivered`` ...
    ``rcpt_bounced`` count them by result; ``transactions`` is the number of
    SMTP transactions the message took (more than one when the server
    limited recipients per transaction).  ``tls_resumed`` is True when the
    TLS session was resumed (a session ticket or ID, a TLS 1.3 PSK) instead
    of fully handshaken; ``cert_verified`` is then what the full handshake
    that made the session found, never more.

    DANE (RFC 7672, see docs/dane.md): ``dane`` is what DANE made of the MX
    host, by its tm_dane_name(): "off" (no trusted DNSSEC resolver, or DANE
    switched off), "insecure", "no-tlsa", "verified", "tlsa-unusable",
    "failed", or "pending" (usable TLSA records, TLS not tried yet: the
    open_status of a Session); ``mx_dnssec`` is True when the MX RRset (or
    the host's address records) validated; ``cert_verified_by`` says what
    authenticated the server: "" (nothing: cert_verified is False), "pkix"
    (a trusted CA and the host name) or "dane" (a TLSA record);
    ``dane_tlsa`` is the record that matched, "usage selector mtype" (e.g.
    "3 1 1"), else "".

    MTA-STS (RFC 8461, see docs/mta-sts.md): ``mta_sts`` is the policy the
    delivery followed, by its tm_mta_sts_name() (str(MtaSts.X)): "off"
    (switched off, or an explicit host), "no-policy", "none", "testing",
    "enforce" or "fetch-failed"; ``mta_sts_id`` the policy's id from its
    TXT record, else ""; ``mta_sts_cached`` True when the policy came from
    the context's cache; ``mta_sts_would_refuse`` (testing mode) True when
    enforce would have refused the host; ``mta_sts_error`` in words what
    enforce refused or would have refused, or why no policy was fetched.
    On a host with usable TLSA records DANE applies instead.
    """
    result: Result = Result.NONE
    error: int = 0
    code: int = 0
    enhanced_code: str = ""
    message: str = ""
    description: str = ""
    tls: bool = False
    cert_verified: bool = False
    tls_failure: TLSFailure = TLSFailure.NONE
    tls_version: str = ""
    tls_cipher: str = ""
    tls_error: str = ""
    mx_host: str = ""
    mx_address: str = ""
    mx_port: int = 0
    attempt_no: int = 0
    session_seconds: float = 0.0
    utf8: bool = False
    policy: Policy = field(default_factory=Policy)
    require_tls_source: PolicySource = PolicySource.DEFAULT
    skip_verify_source: PolicySource = PolicySource.DEFAULT
    keep_unverified_tls_source: PolicySource = PolicySource.DEFAULT
    floor: Floor = Floor.NONE
    recipients: List[RecipientStatus] = field(default_factory=list)
    rcpt_count: int = 0
    rcpt_delivered: int = 0
    rcpt_deferred: int = 0
    rcpt_uncertain: int = 0
    rcpt_bounced: int = 0
    transactions: int = 0
    tls_resumed: bool = False
    dane: str = "off"
    mx_dnssec: bool = False
    cert_verified_by: str = ""
    dane_tlsa: str = ""
    mta_sts: str = "off"
    mta_sts_id: str = ""
    mta_sts_cached: bool = False
    mta_sts_would_refuse: bool = False
    mta_sts_error: str = ""
    _raw: Optional[_ffi.tm_delivery_status] = field(default=None, repr=False, compare=False)
    _raw_rcpts: Any = field(default=None, repr=False, compare=False)

    @property
    def delivered(self) -> bool:
        """True only when every recipient got a 2xx to the end of data."""
        return self.result == Result.DELIVERED

    def raise_for_result(self) -> "DeliveryStatus":
        """Returns self when the message was delivered, else raises the
        DeliveryError for its result (with this status as ``.status``):
        Deferred (TLSRequired when TLS was required and unavailable),
        Bounced or Uncertain.  After a partial delivery (error EPARTIAL)
        the result is the class of the failed recipients, and some
        recipients did get the message: see ``status.recipients``."""
        if self.result == Result.DELIVERED:
            return self
        raise _delivery_error(self.error, self)

    @property
    def error_name(self) -> str:
        """The tm_error name ("OK", "ETLSREQUIRED"...) of ``error``."""
        try:
            return ErrorCode(self.error).name
        except ValueError:
            return str(self.error)

    @classmethod
    def _from_c(cls, st: _ffi.tm_delivery_status, rcpt_array: Any = None) -> "DeliveryStatus":
        """From a C status and the tm_rcpt_status array its message pointed
        at (None: no recipients, as for tm_session_open/tm_starttls)."""
        n = min(int(st.rcpt_count), len(rcpt_array)) if rcpt_array is not None else 0
        rcpts = [RecipientStatus(_s(r.address), _enum(Result, r.result), r.code,
                                 _s(r.enhanced_code), _s(r.message))
                 for r in (rcpt_array[:n] if n else [])]
        pol = Policy(st.policy.require_tls > 0, st.policy.skip_verify > 0,
                     st.policy.keep_unverified_tls > 0)
        return cls(
            result=_enum(Result, st.result), error=st.error, code=st.code,
            enhanced_code=_s(st.enhanced_code), message=_s(st.message),
            description=_s(st.description), tls=bool(st.tls),
            cert_verified=bool(st.cert_verified),
            tls_failure=_enum(TLSFailure, st.tls_failure), tls_version=_s(st.tls_version),
            tls_cipher=_s(st.tls_cipher), tls_error=_s(st.tls_error), mx_host=_s(st.mx_host),
            mx_address=_s(st.mx_address), mx_port=st.mx_port, attempt_no=st.attempt_no,
            session_seconds=st.session_seconds, utf8=bool(st.utf8), policy=pol,
            require_tls_source=_enum(PolicySource, st.require_tls_source),
            skip_verify_source=_enum(PolicySource, st.skip_verify_source),
            keep_unverified_tls_source=_enum(PolicySource, st.keep_unverified_tls_source),
            floor=_enum(Floor, st.floor), recipients=rcpts, rcpt_count=st.rcpt_count,
            rcpt_delivered=st.rcpt_delivered, rcpt_deferred=st.rcpt_deferred,
            rcpt_uncertain=st.rcpt_uncertain, rcpt_bounced=st.rcpt_bounced,
            transactions=st.transactions, tls_resumed=bool(st.tls_resumed),
            dane=_lib.tm_dane_name(st.dane).decode(), mx_dnssec=bool(st.mx_dnssec),
            cert_verified_by=_lib.tm_verified_by_name(st.cert_verified_by).decode(),
            dane_tlsa=_s(st.dane_tlsa),
            mta_sts=_lib.tm_mta_sts_name(st.mta_sts).decode(), mta_sts_id=_s(st.mta_sts_id),
            mta_sts_cached=bool(st.mta_sts_cached),
            mta_sts_would_refuse=bool(st.mta_sts_would_refuse),
            mta_sts_error=_s(st.mta_sts_error), _raw=st,
            _raw_rcpts=rcpt_array if n else None)

    def to_json(self) -> str:
        """The status as one JSON object, written by tm_status_json()."""
        raw = self._raw
        if raw is None:  # built in Python: an empty status
            raw = _new_status()
        rcpts = self._raw_rcpts
        nrcpts = min(int(raw.rcpt_count), len(rcpts)) if rcpts is not None else 0
        n = _lib.tm_status_json(ctypes.byref(raw), rcpts, nrcpts, None, 0)
        if n < 0:
            raise TlsmailError(n)
        buf = ctypes.create_string_buffer(n + 1)
        _lib.tm_status_json(ctypes.byref(raw), rcpts, nrcpts, buf, n + 1)
        return buf.value.decode("utf-8")

    def as_dict(self) -> Dict[str, Any]:
        """json.loads(self.to_json())."""
        return json.loads(self.to_json())


def _new_status() -> _ffi.tm_delivery_status:
    st = _ffi.tm_delivery_status()
    _lib.tm_status_init(ctypes.byref(st), _ffi.TM_STATUS_VERSION)
    return st


# ---------------------------------------------------------------------------
# Context


def _b(s: Optional[Union[str, bytes]], what: str) -> Optional[bytes]:
    if s is None:
        return None
    if isinstance(s, bytes):
        b = s
    elif isinstance(s, str):
        b = s.encode("utf-8")
    else:
        raise TypeError("%s must be str, not %s" % (what, type(s).__name__))
    if b"\0" in b:
        raise InvalidArgument(ErrorCode.EINVAL, "%s contains a NUL character" % what)
    return b


def _ms(seconds: Optional[float]) -> int:
    if seconds is None:
        return 0
    if seconds <= 0:
        raise InvalidArgument(ErrorCode.EINVAL, "timeouts must be > 0 seconds")
    return max(1, int(round(seconds * 1000)))


def _set_dnssec_options(o: _ffi.tm_context_options, dnssec_resolver: Optional[str],
                       dnssec_trust_resolver: bool, dane: Optional[bool]) -> None:
    """The DNSSEC and DANE fields of tm_context_options (version 2)."""
    o.dnssec_resolver = _b(dnssec_resolver, "dnssec_resolver")
    o.dnssec_trust_resolver = _ffi.TM_ON if dnssec_trust_resolver else _ffi.TM_UNSET
    o.dane = _flag_to_c(dane)


def _set_sts_options(o: _ffi.tm_context_options, mta_sts: Optional[bool],
                     sts_cache_max: Optional[int], sts_timeout_ms: Optional[int],
                     sts_https_address: Optional[str], sts_https_port: Optional[int]) -> None:
    """The MTA-STS fields of tm_context_options (version 2) but the callbacks."""
    o.mta_sts = _flag_to_c(mta_sts)
    for name, v, top in (("sts_cache_max", sts_cache_max, 0xFFFFFFFF),
                         ("sts_timeout_ms", sts_timeout_ms, 0xFFFFFFFF),
                         ("sts_https_port", sts_https_port, 65535)):
        if v is None:
            continue
        if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= top:
            raise InvalidArgument(ErrorCode.EINVAL, "%s must be an int in 0..%d" % (name, top))
        setattr(o, name, v)
    o.sts_https_address = _b(sts_https_address, "sts_https_address")


# MTA-STS callbacks (tm_sts_fetch_fn, tm_sts_store_fn, tm_sts_lookup_fn).
# Each wrapper is what C calls: it never lets a Python exception unwind into
# the library (ctypes would print it and return 0, which is TM_OK), but
# returns a failure and hands the exception to `record`.

StsFetch = Callable[[str, str], Optional[Union[bytes, bytearray, memoryview, str]]]
StsStore = Callable[[str, str], None]
StsLookup = Callable[[str], Optional[str]]


def _sts_fetch_wrapper(fn: StsFetch, record: Callable[[BaseException], None]) -> Any:
    def fetch(_arg: Any, domain: bytes, url: bytes, body: Optional[int], size: int,
              length: Any) -> int:
        try:
            data = fn(domain.decode("utf-8", "replace"), url.decode("utf-8", "replace"))
            if data is None:
                return int(ErrorCode.ENOTFOUND)  # no policy: the fetch failed
            if isinstance(data, str):
                data = data.encode("utf-8")
            data = bytes(memoryview(data).cast("B"))
            if len(data) > size:
                raise ValueError("the MTA-STS policy of %s is larger than %d bytes"
                                 % (domain.decode("utf-8", "replace"), size))
            if data:
                ctypes.memmove(body, data, len(data))
            length[0] = len(data)
            return 0
        except BaseException as e:  # noqa: B902 - never unwind through C
            record(e)
            return int(ErrorCode.EIO)

    return _ffi.tm_sts_fetch_fn(fetch)


def _sts_store_wrapper(fn: StsStore, record: Callable[[BaseException], None]) -> Any:
    def store(_arg: Any, domain: bytes, entry: bytes) -> None:
        try:
            fn(domain.decode("utf-8", "replace"), entry.decode("utf-8", "replace"))
        except BaseException as e:  # noqa: B902
            record(e)

    return _ffi.tm_sts_store_fn(store)


def _sts_lookup_wrapper(fn: StsLookup, record: Callable[[BaseException], None]) -> Any:
    def lookup(_arg: Any, domain: bytes, buf: Optional[int], size: int) -> int:
        try:
            entry = fn(domain.decode("utf-8", "replace"))
            if entry is None:
                return int(ErrorCode.ENOTFOUND)
            b = entry.encode("utf-8") if isinstance(entry, str) else bytes(entry)
            b = b.rstrip(b"\r\n")
            if b"\0" in b or b"\n" in b:
                raise ValueError("an MTA-STS cache entry is one line without NUL")
            if len(b) + 1 > size:
                raise ValueError("the MTA-STS cache entry of %s is longer than %d bytes"
                                 % (domain.decode("utf-8", "replace"), size - 1))
            ctypes.memmove(buf, b + b"\0", len(b) + 1)
            return 0
        except BaseException as e:  # noqa: B902
            record(e)
            return int(ErrorCode.ENOTFOUND)

    return _ffi.tm_sts_lookup_fn(lookup)


class Context:
    """tm_context: trust store, resolver settings, timeouts, EHLO name and the
    per-domain settings tables; create once, share between threads.

    Every option left None takes the library's default (system CA store,
    host name for EHLO, port 25, system resolver, RFC 5321 timeouts).
    ``ca_file`` is a PEM bundle of trusted CAs, ``ca_path`` a directory of
    PEM or DER CA certificates, one per file (as OpenSSL's -CApath; files
    that do not parse are skipped); given both, both are trusted; given
    neither, the system store is.  reload_ca() reads them again.
    ``timeout`` (seconds) sets command_timeout_ms; the ``*_timeout_ms``
    keywords set one timeout each.  ``log`` is called as log(level, line) on
    the thread running a call, for levels up to ``log_level``.

    DNSSEC and DANE (RFC 7672; docs/dane.md): ``dnssec_resolver`` is
    "IP" or "IP:PORT" (IPv4) of a DNSSEC-validating resolver this host
    trusts (e.g. unbound on 127.0.0.1); every lookup then goes to it and its
    AD bit is believed.  ``dnssec_trust_resolver=True`` says the resolver
    asked anyway (``dns_server``, else the system's) validates and is
    trusted.  Either turns DANE on; ``dane=False`` (TM_OFF) turns it off
    again (None and True leave it on when a trusted resolver is set).
    Without a trusted resolver DANE is off and the AD bit is never believed.

    MTA-STS (RFC 8461; docs/mta-sts.md) is on by default (``mta_sts`` None
    or True); ``mta_sts=False`` (TM_OFF) turns it off for this context.
    ``sts_cache_max`` bounds the policies kept in memory (default 1000),
    ``sts_timeout_ms`` the TXT lookup and policy fetch together (default
    10000).  ``sts_https_address`` / ``sts_https_port`` make the built-in
    fetcher connect to that IP address and port: for tests and private
    deployments only (the certificate must still be valid for
    mta-sts.<domain>).  Callables, called on the delivering thread:

    ``sts_fetch(domain, url)``  fetches the policy itself (your HTTP client,
        your proxy) instead of the built-in fetcher, and returns the body
        (bytes, at most 65536) or None when there is none.  It must do
        what RFC 8461 3.3 asks: HTTPS verified for mta-sts.<domain>, no
        redirects, 200 and text/plain only, a timeout.
    ``sts_store(domain, entry)``  a fetched policy entered the cache:
        ``entry`` is one line of the cache file format, to keep in your
        database.
    ``sts_lookup(domain)``  nothing is cached for ``domain``: return the
        entry sts_store was last given for it, or None.

    An exception raised by one of them is never passed to the library: the
    call counts as failed (no policy fetched; nothing stored; not found)
    and the exception is kept in ``sts_callback_error``.  The callables
    are referenced by the context until it is freed.

    Use it as a context manager or call close(); close() raises
    SessionStateError while a Session on it is open or a call runs.
    Raises CAFileError, InvalidArgument, OutOfMemory.
    """

    def __init__(self, *, ca_file: Optional[Union[str, os.PathLike]] = None,
                 ca_path: Optional[Union[str, os.PathLike]] = None,
                 helo_name: Optional[str] = None, dns_server: Optional[str] = None,
                 port: Optional[int] = None, timeout: Optional[float] = None,
                 command_timeout_ms: Optional[int] = None,
                 connect_timeout_ms: Optional[int] = None,
                 greeting_timeout_ms: Optional[int] = None,
                 ehlo_timeout_ms: Optional[int] = None, tls_timeout_ms: Optional[int] = None,
                 mail_timeout_ms: Optional[int] = None, rcpt_timeout_ms: Optional[int] = None,
                 data_timeout_ms: Optional[int] = None,
                 data_block_timeout_ms: Optional[int] = None,
                 data_end_timeout_ms: Optional[int] = None,
                 quit_timeout_ms: Optional[int] = None,
                 delivery_timeout_ms: Optional[int] = None, max_mx: Optional[int] = None,
                 max_addresses: Optional[int] = None,
                 log: Optional[Callable[[LogLevel, str], None]] = None,
                 log_level: LogLevel = LogLevel.ERROR,
                 dnssec_resolver: Optional[str] = None,
                 dnssec_trust_resolver: bool = False,
                 dane: Optional[bool] = None,
                 mta_sts: Optional[bool] = None,
                 sts_cache_max: Optional[int] = None,
                 sts_timeout_ms: Optional[int] = None,
                 sts_https_address: Optional[str] = None,
                 sts_https_port: Optional[int] = None,
                 sts_fetch: Optional[StsFetch] = None,
                 sts_store: Optional[StsStore] = None,
                 sts_lookup: Optional[StsLookup] = None) -> None:
        self._ptr: Optional[int] = None
        self._lock = threading.Lock()
        self._users = 0
        o = _ffi.tm_context_options()
        _lib.tm_context_options_init(ctypes.byref(o), _ffi.TM_CONTEXT_OPTIONS_VERSION)
        o.ca_file = _b(os.fspath(ca_file) if ca_file is not None else None, "ca_file")
        o.ca_path = _b(os.fspath(ca_path) if ca_path is not None else None, "ca_path")
        o.helo_name = _b(helo_name, "helo_name")
        o.dns_server = _b(dns_server, "dns_server")
        _set_dnssec_options(o, dnssec_resolver, dnssec_trust_resolver, dane)
        _set_sts_options(o, mta_sts, sts_cache_max, sts_timeout_ms, sts_https_address,
                         sts_https_port)
        if timeout is not None and command_timeout_ms is not None:
            raise InvalidArgument(ErrorCode.EINVAL, "give timeout or command_timeout_ms, not both")
        ints = {
            "port": port, "command_timeout_ms": command_timeout_ms if timeout is None
            else _ms(timeout), "connect_timeout_ms": connect_timeout_ms,
            "greeting_timeout_ms": greeting_timeout_ms, "ehlo_timeout_ms": ehlo_timeout_ms,
            "tls_timeout_ms": tls_timeout_ms, "mail_timeout_ms": mail_timeout_ms,
            "rcpt_timeout_ms": rcpt_timeout_ms, "data_timeout_ms": data_timeout_ms,
            "data_block_timeout_ms": data_block_timeout_ms,
            "data_end_timeout_ms": data_end_timeout_ms, "quit_timeout_ms": quit_timeout_ms,
            "delivery_timeout_ms": delivery_timeout_ms, "max_mx": max_mx,
            "max_addresses": max_addresses,
        }
        for k, v in ints.items():
            if v is None:
                continue
            if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= 0xFFFFFFFF:
                raise InvalidArgument(ErrorCode.EINVAL, "%s must be an int in 0..2^32-1" % k)
            setattr(o, k, v)
        # The C callback must outlive the context: kept on self.
        self._log_cb = None
        if log is not None:
            user_log = log

            def _log(_arg: Any, level: int, message: bytes) -> None:
                try:
                    user_log(_enum(LogLevel, level), message.decode("utf-8", "replace"))
                except Exception:  # never unwind through C
                    pass

            self._log_cb = _ffi.tm_log_fn(_log)
            o.log = self._log_cb
            o.log_level = int(log_level)
        # The same for the MTA-STS callbacks.  Their errors go to a box of
        # their own, not to self: no reference cycle keeps the context alive.
        box: List[Optional[BaseException]] = [None]
        self._sts_errors = box

        def record(e: BaseException) -> None:
            box[0] = e

        self._sts_fetch_cb = self._sts_store_cb = self._sts_lookup_cb = None
        for name, fn in (("sts_fetch", sts_fetch), ("sts_store", sts_store),
                         ("sts_lookup", sts_lookup)):
            if fn is not None and not callable(fn):
                raise TypeError("%s must be callable, not %s" % (name, type(fn).__name__))
        if sts_fetch is not None:
            self._sts_fetch_cb = _sts_fetch_wrapper(sts_fetch, record)
            o.sts_fetch = self._sts_fetch_cb
        if sts_store is not None:
            self._sts_store_cb = _sts_store_wrapper(sts_store, record)
            o.sts_store = self._sts_store_cb
        if sts_lookup is not None:
            self._sts_lookup_cb = _sts_lookup_wrapper(sts_lookup, record)
            o.sts_lookup = self._sts_lookup_cb
        out = ctypes.c_void_p()
        rc = _lib.tm_context_new(ctypes.byref(out), ctypes.byref(o))
        _check(rc)
        self._ptr = out.value

    @property
    def sts_callback_error(self) -> Optional[BaseException]:
        """The last exception an sts_fetch, sts_store or sts_lookup callable
        raised (the library saw a failure instead), or None."""
        return self._sts_errors[0]

    # -- lifetime -----------------------------------------------------------

    def _acquire(self) -> int:
        with self._lock:
            if self._ptr is None:
                raise SessionStateError(ErrorCode.ESTATE, "the context is closed")
            self._users += 1
            return self._ptr

    def _release(self) -> None:
        with self._lock:
            self._users -= 1

    @property
    def closed(self) -> bool:
        return self._ptr is None

    def close(self) -> None:
        """tm_context_free().  Idempotent."""
        with self._lock:
            if self._ptr is None:
                return
            if self._users:
                raise SessionStateError(ErrorCode.ESTATE,
                                        "the context is in use (open session or running call)")
            ptr, self._ptr = self._ptr, None
        _lib.tm_context_free(ptr)

    def __enter__(self) -> "Context":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            if self._ptr is not None and not self._users:
                _lib.tm_context_free(self._ptr)
                self._ptr = None
        except Exception:
            pass

    # -- trust store --------------------------------------------------------

    def reload_ca(self) -> None:
        """tm_context_reload_ca(): reads the trust store again from where the
        context was told (ca_file, ca_path, or the system store), for when
        certificates rotate.  Safe while other threads deliver with this
        context: a handshake under way finishes with the store it began
        with, every later one uses the new store, and no TLS session
        verified under the old store is resumed.  Releases the GIL.

        Raises CAFileError when nothing is readable or no certificate was
        found (the old store then stays in use), OutOfMemory, or
        SessionStateError when the context is closed.
        """
        _check(self._call(_lib.tm_context_reload_ca))

    # -- delivery -----------------------------------------------------------

    def deliver(self, from_addr: str, to: Recipients, data: Data, *,
                policy: Optional[Policy] = None, host: Optional[str] = None,
                port: Optional[int] = None,
                sending_domain: Optional[str] = None) -> DeliveryStatus:
        """tm_deliver() with this context; see tlsmail.deliver()."""
        return deliver(from_addr, to, data, policy=policy, host=host, port=port, context=self,
                       sending_domain=sending_domain)

    def session(self, domain: str, *, host: Optional[str] = None,
                port: Optional[int] = None) -> "Session":
        """Session(self, domain, host=..., port=...)."""
        return Session(self, domain, host=host, port=port)

    # -- settings -----------------------------------------------------------

    def _call(self, fn: Callable[..., int], *args: Any) -> int:
        ptr = self._acquire()
        try:
            return int(fn(ptr, *args))
        finally:
            self._release()

    def set_domain_policy(self, sending_domain: str, policy: Policy) -> None:
        """tm_domain_policy_set(): the settings of a sending domain (flags
        left None are not set)."""
        p = policy._to_c()
        _check(self._call(_lib.tm_domain_policy_set, _b(sending_domain, "sending_domain"),
                          ctypes.byref(p)))

    def get_domain_policy(self, sending_domain: str) -> Optional[Policy]:
        """tm_domain_policy_get(): the settings, or None when there are none."""
        p = _ffi.tm_policy()
        rc = self._call(_lib.tm_domain_policy_get, _b(sending_domain, "sending_domain"),
                        ctypes.byref(p))
        if rc == ErrorCode.ENOTFOUND:
            return None
        _check(rc)
        return Policy._from_c(p)

    def delete_domain_policy(self, sending_domain: str) -> bool:
        """tm_domain_policy_delete(): True if there were settings to remove."""
        rc = self._call(_lib.tm_domain_policy_delete, _b(sending_domain, "sending_domain"))
        if rc == ErrorCode.ENOTFOUND:
            return False
        _check(rc)
        return True

    def set_recipient_floor(self, recipient_domain: str,
                            floor: Union[Floor, int, str]) -> None:
        """tm_recipient_floor_set(); floor is a Floor or "none"/"tls"/"verified"/"dane"."""
        if isinstance(floor, str):
            try:
                floor = Floor[floor.upper()]
            except KeyError:
                raise InvalidArgument(ErrorCode.EINVAL, "floor must be none, tls, verified or dane")
        _check(self._call(_lib.tm_recipient_floor_set, _b(recipient_domain, "recipient_domain"),
                          int(floor)))

    def get_recipient_floor(self, recipient_domain: str) -> Floor:
        """tm_recipient_floor_get(): Floor.NONE when unset."""
        v = ctypes.c_int(0)
        _check(self._call(_lib.tm_recipient_floor_get, _b(recipient_domain, "recipient_domain"),
                          ctypes.byref(v)))
        return _enum(Floor, v.value)

    def _list_text(self, fn, errors: str = "strict") -> str:
        """A tm_*_list function (snprintf semantics), with a buffer that
        grows until the whole text fits."""
        ptr = self._acquire()
        try:
            size = 4096
            while True:  # the text may grow between the two calls
                buf = ctypes.create_string_buffer(size)
                n = fn(ptr, buf, size)
                _check(min(n, 0))
                if n < size:
                    return buf.value.decode("utf-8", errors)
                size = n + 1
        finally:
            self._release()

    def list_settings(self) -> str:
        """tm_settings_list(): every setting in the settings-file format."""
        return self._list_text(_lib.tm_settings_list)

    def load_settings(self, path: Union[str, os.PathLike], replace: bool = False) -> None:
        """tm_settings_load(): applies the file only if it is valid as a whole.
        Raises SettingsSyntaxError (with .line), or TlsmailError (EIO)."""
        p = os.fspath(path)
        line = ctypes.c_int(0)
        rc = self._call(_lib.tm_settings_load, _b(p, "path"), 1 if replace else 0,
                        ctypes.byref(line))
        if rc == ErrorCode.ESYNTAX:
            raise SettingsSyntaxError(rc, line.value, str(p))
        _check(rc)

    def save_settings(self, path: Union[str, os.PathLike]) -> None:
        """tm_settings_save(): writes the tables atomically."""
        _check(self._call(_lib.tm_settings_save, _b(os.fspath(path), "path")))

    # -- MTA-STS policy cache ----------------------------------------------

    def sts_cache_list(self) -> str:
        """tm_sts_cache_list(): the cached MTA-STS policies in the cache
        file format, one line per policy domain:
        "policy DOMAIN ID FETCHED EXPIRES USED MODE MAX_AGE MX,MX,..."."""
        return self._list_text(_lib.tm_sts_cache_list, "replace")

    def sts_cache_load(self, path: Union[str, os.PathLike]) -> None:
        """tm_sts_cache_load(): adds the policies of a cache file (written
        by sts_cache_save) to the context's cache, each replacing the
        cached one of its domain; expired ones are dropped.  All or
        nothing: raises StsCacheSyntaxError (with .line) and changes
        nothing when a line is malformed; TlsmailError (EIO) when the file
        cannot be read."""
        p = os.fspath(path)
        line = ctypes.c_int(0)
        rc = self._call(_lib.tm_sts_cache_load, _b(p, "path"), ctypes.byref(line))
        if rc == ErrorCode.ESYNTAX:
            raise StsCacheSyntaxError(rc, line.value, str(p))
        _check(rc)

    def sts_cache_save(self, path: Union[str, os.PathLike]) -> None:
        """tm_sts_cache_save(): writes the cached MTA-STS policies to path
        atomically (a temporary file, then a rename), for the next start."""
        _check(self._call(_lib.tm_sts_cache_save, _b(os.fspath(path), "path")))


_default_ctx: Optional[Context] = None
_default_lock = threading.Lock()


def default_context() -> Context:
    """The context deliver() uses when given none: system CA store and
    resolver, default timeouts; created on first use, shared."""
    global _default_ctx
    with _default_lock:
        if _default_ctx is None or _default_ctx.closed:
            _default_ctx = Context()
        return _default_ctx


# ---------------------------------------------------------------------------
# Messages


class _Message:
    """Holds a tm_message and every Python object its pointers refer to, for
    the duration of one call."""

    def __init__(self, from_addr: str, to: Recipients, data: Data,
                 sending_domain: Optional[str]) -> None:
        if isinstance(to, (str, bytes)):
            to = [to]  # type: ignore[list-item]
        rcpts = [_b(t, "recipient") for t in to]
        if not rcpts:
            raise InvalidArgument(ErrorCode.EINVAL, "at least one recipient is needed")
        self.to = (ctypes.c_char_p * len(rcpts))(*rcpts)
        # Receives each recipient's outcome during the call.
        self.rcpt_status = (_ffi.tm_rcpt_status * len(rcpts))()
        m = _ffi.tm_message()
        _lib.tm_message_init(ctypes.byref(m), _ffi.TM_MESSAGE_VERSION)
        m.from_ = _b(from_addr, "from_addr")
        m.to = ctypes.cast(self.to, ctypes.POINTER(ctypes.c_char_p))
        m.to_count = len(rcpts)
        m.sending_domain = _b(sending_domain, "sending_domain")
        m.rcpt_status = ctypes.cast(self.rcpt_status, ctypes.POINTER(_ffi.tm_rcpt_status))
        m.rcpt_status_cap = len(rcpts)
        self.error: Optional[BaseException] = None
        self.keep: Any = None
        self.reader: Any = None
        if isinstance(data, str):
            data = data.encode("utf-8")
        if isinstance(data, bytes):
            self.keep = ctypes.c_char_p(data)  # points into the bytes object
            m.data = ctypes.cast(self.keep, ctypes.c_void_p)
            m.size = len(data)
        elif isinstance(data, (bytearray, memoryview)):
            mv = memoryview(data).cast("B")
            if mv.readonly or not mv.contiguous:
                mv = memoryview(bytearray(mv))
            self.keep = (ctypes.c_char * len(mv)).from_buffer(mv) if len(mv) else None
            m.data = ctypes.cast(self.keep, ctypes.c_void_p) if self.keep is not None else None
            m.size = len(mv)
        elif hasattr(data, "read"):
            self.reader = _ffi.tm_read_fn(self._make_reader(data))
            m.read = self.reader
        else:
            raise TypeError("data must be bytes, str or a binary file object, not %s"
                            % type(data).__name__)
        if m.size and m.data is None:
            m.data = ctypes.cast(ctypes.c_char_p(b""), ctypes.c_void_p)
        self.c = m

    def _make_reader(self, f: Any) -> Callable[[Any, Any, int], int]:
        readinto = getattr(f, "readinto", None)

        def read(_arg: Any, buf: Any, size: int) -> int:
            try:
                if readinto is not None:
                    view = memoryview((ctypes.c_ubyte * size).from_address(
                        ctypes.addressof(buf.contents))).cast("B")
                    n = readinto(view)
                    if n is None:
                        raise BlockingIOError("non-blocking file returned no data")
                    return int(n)
                chunk = f.read(size)
                if isinstance(chunk, str):
                    raise TypeError("the message file must be opened in binary mode")
                if not chunk:
                    return 0
                if len(chunk) > size:
                    raise ValueError("read() returned more bytes than asked")
                ctypes.memmove(buf, chunk, len(chunk))
                return len(chunk)
            except BaseException as e:  # noqa: B902 - reported after the call
                self.error = e
                return -1

        return read


def _session_options(host: Optional[str], port: Optional[int]) -> Optional[_ffi.tm_session_options]:
    if host is None and port is None:
        return None
    so = _ffi.tm_session_options()
    _lib.tm_session_options_init(ctypes.byref(so), _ffi.TM_SESSION_OPTIONS_VERSION)
    so.host = _b(host, "host")
    if port is not None:
        if not isinstance(port, int) or not 0 < port < 65536:
            raise InvalidArgument(ErrorCode.EINVAL, "port must be 1..65535")
        so.port = port
    return so


def _outcome(rc: int, st: _ffi.tm_delivery_status, msg: _Message) -> DeliveryStatus:
    status = DeliveryStatus._from_c(st, msg.rcpt_status)
    if msg.error is not None:
        err = MessageReadError(ErrorCode.EREAD, status=status)
        raise err from msg.error
    exc = _misuse(rc, status)
    if exc is not None:
        raise exc
    return status


def deliver(from_addr: str, to: Recipients, data: Data, *, policy: Optional[Policy] = None,
            host: Optional[str] = None, port: Optional[int] = None,
            context: Optional[Context] = None,
            sending_domain: Optional[str] = None, check: bool = False) -> DeliveryStatus:
    """tm_deliver(): deliver one message to the MX hosts of the recipients'
    domain (all recipients must share it), or to ``host``.

    from_addr       envelope sender ("" for the null reverse-path)
    to              one address or a sequence of them (no limit: the library
                    uses several transactions when a server wants fewer)
    data            the RFC 5322 message: bytes-like (str is encoded as
                    UTF-8), or a binary file object streamed in chunks
    policy          per-message Policy (None: nothing set)
    host, port      deliver to this host / port instead of the MX hosts
    context         the Context (default: default_context())
    sending_domain  whose connection settings apply (default: from's domain)
    check           raise Deferred, Bounced, Uncertain or TLSRequired (all
                    DeliveryError) instead of returning a status that is not
                    delivered (status.raise_for_result())

    Returns the DeliveryStatus for every SMTP outcome (check ``.result`` or
    ``.delivered``); raises InvalidArgument, OutOfMemory, MessageReadError,
    SessionStateError (closed context) or TlsmailError (EIO).  Blocks
    (releasing the GIL); see deliver_async() for asyncio.
    """
    ctx = context if context is not None else default_context()
    msg = _Message(from_addr, to, data, sending_domain)
    pol = policy._to_c() if policy is not None else None
    so = _session_options(host, port)
    st = _new_status()
    ptr = ctx._acquire()
    try:
        rc = _lib.tm_deliver(ptr, ctypes.byref(msg.c), ctypes.byref(pol) if pol else None,
                             ctypes.byref(so) if so else None, ctypes.byref(st))
    finally:
        ctx._release()
    status = _outcome(rc, st, msg)
    return status.raise_for_result() if check else status


async def deliver_async(from_addr: str, to: Recipients, data: Data, *,
                        policy: Optional[Policy] = None, host: Optional[str] = None,
                        port: Optional[int] = None, context: Optional[Context] = None,
                        sending_domain: Optional[str] = None, check: bool = False,
                        executor: Any = None) -> DeliveryStatus:
    """deliver() for asyncio: the blocking call runs in ``executor`` (None:
    the event loop's default thread pool) while the event loop goes on; the
    library releases the GIL for the whole delivery.  Same arguments,
    result and exceptions as deliver().

    Cancelling the awaiting task does not stop a delivery that has started
    (a C call cannot be interrupted): it runs to its end, bounded by the
    context's timeouts, and its outcome is lost - the message may have been
    delivered.  A file object given as ``data`` is read on the executor's
    thread.
    """
    loop = asyncio.get_running_loop()
    call = functools.partial(deliver, from_addr, to, data, policy=policy, host=host,
                             port=port, context=context, sending_domain=sending_domain,
                             check=check)
    return await loop.run_in_executor(executor, call)


# ---------------------------------------------------------------------------
# Sessions


class Session:
    """tm_session: one SMTP connection to a domain's MX (or ``host``) that
    carries many messages::

        with tlsmail.Session(ctx, "example.org") as s:
            s.starttls(tlsmail.Policy(require_tls=True))
            for m in messages:
                st = s.send("me@example.com", ["a@example.org"], m)

    The constructor opens the session (tm_session_open) and raises
    DeliveryError with the status when no host could be reached or the
    domain takes no mail.  ``open_status`` keeps that status.  Use one
    thread at a time (calls are serialised by a lock).
    """

    def __init__(self, context: Context, domain: str, *, host: Optional[str] = None,
                 port: Optional[int] = None) -> None:
        self._ptr: Optional[int] = None
        self._lock = threading.Lock()
        self.context = context
        self.domain = domain
        self.tls_status: Optional[DeliveryStatus] = None
        so = _session_options(host, port)
        st = _new_status()
        out = ctypes.c_void_p()
        ctxptr = context._acquire()  # held until close()
        try:
            rc = _lib.tm_session_open(ctypes.byref(out), ctxptr, _b(domain, "domain"),
                                      ctypes.byref(so) if so else None, ctypes.byref(st))
        except BaseException:
            context._release()
            raise
        self.open_status = DeliveryStatus._from_c(st)
        if rc != 0:
            context._release()
            raise _misuse(rc, self.open_status) or _delivery_error(rc, self.open_status)
        self._ptr = out.value

    @classmethod
    def open(cls, context: Context, domain: str, *, host: Optional[str] = None,
             port: Optional[int] = None) -> "Session":
        """Same as the constructor."""
        return cls(context, domain, host=host, port=port)

    def _get(self) -> int:
        if self._ptr is None:
            raise SessionStateError(ErrorCode.ESTATE, "the session is closed")
        return self._ptr

    def starttls(self, policy: Optional[Policy] = None) -> DeliveryStatus:
        """tm_starttls(): apply the policy (STARTTLS, verification, fallback,
        moving on to the next MX under require_tls).  Returns the TLS outcome
        (tls, cert_verified, tls_error, mx_host); raises TLSRequired or
        another DeliveryError (Deferred, Bounced: the fallback connection
        failed) or SessionStateError."""
        pol = policy._to_c() if policy is not None else None
        st = _new_status()
        with self._lock:
            rc = _lib.tm_starttls(self._get(), ctypes.byref(pol) if pol else None,
                                  ctypes.byref(st))
        status = DeliveryStatus._from_c(st)
        self.tls_status = status
        if rc == ErrorCode.ETLSREQUIRED:
            raise TLSRequired(rc, status=status)
        if rc != 0:
            raise _misuse(rc, status) or _delivery_error(rc, status)
        return status

    def send(self, from_addr: str, to: Recipients, data: Data, *,
             sending_domain: Optional[str] = None, check: bool = False) -> DeliveryStatus:
        """tm_send(): one message over the session.  Returns the status for
        every SMTP outcome, like deliver() (with check=True: raises the
        DeliveryError for any result but delivered); raises for misuse
        (including SessionStateError once the connection has failed)."""
        msg = _Message(from_addr, to, data, sending_domain)
        st = _new_status()
        with self._lock:
            rc = _lib.tm_send(self._get(), ctypes.byref(msg.c), ctypes.byref(st))
        status = _outcome(rc, st, msg)
        return status.raise_for_result() if check else status

    @property
    def closed(self) -> bool:
        return self._ptr is None

    def close(self) -> None:
        """tm_session_close(): QUIT and free.  Idempotent."""
        with self._lock:
            ptr, self._ptr = self._ptr, None
        if ptr is not None:
            _lib.tm_session_close(ptr)
            self.context._release()

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass
