"""Low-level ctypes mirror of include/tlsmail.h (private).

Every Structure here must match the header field for field.  At import the
package compares each one with the layout the library reports
(tm_abi_layout(): every field's name, offset and size, their order, and the
struct's size) and raises ImportError naming the first difference, so a
stale binding never corrupts memory.  check_structure() runs that comparison
on any Structure.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sysconfig
from pathlib import Path
from typing import Dict, List, Optional, Tuple

# -- constants (the header's macros; FFI cannot expand them) ---------------

TM_ON = 1
TM_UNSET = 0
TM_OFF = -1

# The struct versions this binding's Structures have (passed to the
# library, which reads and writes only the fields of that version).
TM_POLICY_VERSION = 1
TM_STATUS_VERSION = 2
TM_CONTEXT_OPTIONS_VERSION = 2  # 2 added ca_path, the DNSSEC/DANE and MTA-STS options
TM_MESSAGE_VERSION = 2
TM_SESSION_OPTIONS_VERSION = 1

TM_ADDRESS_MAX = 256
TM_HOST_MAX = 256
TM_IPADDR_MAX = 48
TM_TEXT_MAX = 512
TM_RCPT_TEXT_MAX = 256
TM_ENHANCED_MAX = 16
TM_TLSA_TEXT_MAX = 16
TM_STS_ID_TEXT_MAX = 33  # an MTA-STS policy id: 1 to 32 letters and digits, NUL
TM_STS_BODY_MAX = 65536  # what tm_sts_fetch_fn may give (the body cap)
TM_STATUS_JSON_MAX = 16384
TM_RCPT_JSON_MAX = 3328

SONAME_MAJOR = 1  # the soversion (libtlsmail.so.N) this binding was written for
VERSION_MAJOR = 0  # the library version (tm_version_number() >> 16) it expects

# -- structures ------------------------------------------------------------


class tm_policy(ctypes.Structure):
    _fields_ = [
        ("version", ctypes.c_uint),
        ("require_tls", ctypes.c_int),
        ("skip_verify", ctypes.c_int),
        ("keep_unverified_tls", ctypes.c_int),
    ]


class tm_rcpt_status(ctypes.Structure):
    _fields_ = [
        ("address", ctypes.c_char * TM_ADDRESS_MAX),
        ("result", ctypes.c_int),
        ("code", ctypes.c_int),
        ("enhanced_code", ctypes.c_char * TM_ENHANCED_MAX),
        ("message", ctypes.c_char * TM_RCPT_TEXT_MAX),
    ]


class tm_delivery_status(ctypes.Structure):
    _fields_ = [
        ("version", ctypes.c_uint),
        ("result", ctypes.c_int),
        ("error", ctypes.c_int),
        ("code", ctypes.c_int),
        ("enhanced_code", ctypes.c_char * TM_ENHANCED_MAX),
        ("message", ctypes.c_char * TM_TEXT_MAX),
        ("description", ctypes.c_char * TM_TEXT_MAX),
        ("tls", ctypes.c_int),
        ("cert_verified", ctypes.c_int),
        ("tls_failure", ctypes.c_int),
        ("tls_version", ctypes.c_char * 16),
        ("tls_cipher", ctypes.c_char * 64),
        ("tls_error", ctypes.c_char * TM_TEXT_MAX),
        ("mx_host", ctypes.c_char * TM_HOST_MAX),
        ("mx_address", ctypes.c_char * TM_IPADDR_MAX),
        ("mx_port", ctypes.c_int),
        ("attempt_no", ctypes.c_uint),
        ("session_seconds", ctypes.c_double),
        ("utf8", ctypes.c_int),
        ("policy", tm_policy),
        ("require_tls_source", ctypes.c_int),
        ("skip_verify_source", ctypes.c_int),
        ("keep_unverified_tls_source", ctypes.c_int),
        ("floor", ctypes.c_int),
        ("rcpt_count", ctypes.c_uint),
        ("rcpt_delivered", ctypes.c_uint),
        ("rcpt_deferred", ctypes.c_uint),
        ("rcpt_uncertain", ctypes.c_uint),
        ("rcpt_bounced", ctypes.c_uint),
        ("transactions", ctypes.c_uint),
        ("tls_resumed", ctypes.c_int),
        ("dane", ctypes.c_int),  # tm_dane
        ("mx_dnssec", ctypes.c_int),
        ("cert_verified_by", ctypes.c_int),  # tm_verified_by
        ("dane_tlsa", ctypes.c_char * TM_TLSA_TEXT_MAX),
        ("mta_sts", ctypes.c_int),  # tm_mta_sts
        ("mta_sts_id", ctypes.c_char * TM_STS_ID_TEXT_MAX),
        ("mta_sts_cached", ctypes.c_int),
        ("mta_sts_would_refuse", ctypes.c_int),
        ("mta_sts_error", ctypes.c_char * TM_TEXT_MAX),
    ]


# void (*tm_log_fn)(void *arg, int level, const char *message)
tm_log_fn = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p)
# long (*tm_read_fn)(void *arg, unsigned char *buf, size_t size)
tm_read_fn = ctypes.CFUNCTYPE(ctypes.c_long, ctypes.c_void_p,
                              ctypes.POINTER(ctypes.c_ubyte), ctypes.c_size_t)
# int (*tm_sts_fetch_fn)(void *arg, const char *domain, const char *url,
#                        char *body, size_t size, size_t *len)
# (body as void *: ctypes would turn a char * into a copy)
tm_sts_fetch_fn = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p,
                                   ctypes.c_char_p, ctypes.c_void_p, ctypes.c_size_t,
                                   ctypes.POINTER(ctypes.c_size_t))
# void (*tm_sts_store_fn)(void *arg, const char *domain, const char *entry)
tm_sts_store_fn = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p)
# int (*tm_sts_lookup_fn)(void *arg, const char *domain, char *buf, size_t size)
tm_sts_lookup_fn = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p,
                                    ctypes.c_void_p, ctypes.c_size_t)


class tm_context_options(ctypes.Structure):
    _fields_ = [
        ("version", ctypes.c_uint),
        ("ca_file", ctypes.c_char_p),
        ("helo_name", ctypes.c_char_p),
        ("dns_server", ctypes.c_char_p),
        ("port", ctypes.c_uint),
        ("command_timeout_ms", ctypes.c_uint),
        ("connect_timeout_ms", ctypes.c_uint),
        ("greeting_timeout_ms", ctypes.c_uint),
        ("ehlo_timeout_ms", ctypes.c_uint),
        ("tls_timeout_ms", ctypes.c_uint),
        ("mail_timeout_ms", ctypes.c_uint),
        ("rcpt_timeout_ms", ctypes.c_uint),
        ("data_timeout_ms", ctypes.c_uint),
        ("data_block_timeout_ms", ctypes.c_uint),
        ("data_end_timeout_ms", ctypes.c_uint),
        ("quit_timeout_ms", ctypes.c_uint),
        ("delivery_timeout_ms", ctypes.c_uint),
        ("max_mx", ctypes.c_uint),
        ("max_addresses", ctypes.c_uint),
        ("log", tm_log_fn),
        ("log_arg", ctypes.c_void_p),
        ("log_level", ctypes.c_int),
        ("ca_path", ctypes.c_char_p),  # version 2
        ("dnssec_resolver", ctypes.c_char_p),  # version 2
        ("dnssec_trust_resolver", ctypes.c_int),  # version 2
        ("dane", ctypes.c_int),  # version 2
        ("mta_sts", ctypes.c_int),  # version 2
        ("sts_fetch", tm_sts_fetch_fn),  # version 2
        ("sts_fetch_arg", ctypes.c_void_p),  # version 2
        ("sts_store", tm_sts_store_fn),  # version 2
        ("sts_lookup", tm_sts_lookup_fn),  # version 2
        ("sts_cache_arg", ctypes.c_void_p),  # version 2
        ("sts_cache_max", ctypes.c_uint),  # version 2
        ("sts_timeout_ms", ctypes.c_uint),  # version 2
        ("sts_https_address", ctypes.c_char_p),  # version 2: tests, private deployments
        ("sts_https_port", ctypes.c_uint),  # version 2: tests, private deployments
    ]


class tm_message(ctypes.Structure):
    _fields_ = [
        ("version", ctypes.c_uint),
        ("from_", ctypes.c_char_p),  # `from` in C
        ("to", ctypes.POINTER(ctypes.c_char_p)),
        ("to_count", ctypes.c_size_t),
        ("data", ctypes.c_void_p),
        ("size", ctypes.c_size_t),
        ("read", tm_read_fn),
        ("read_arg", ctypes.c_void_p),
        ("sending_domain", ctypes.c_char_p),
        ("rcpt_status", ctypes.POINTER(tm_rcpt_status)),
        ("rcpt_status_cap", ctypes.c_size_t),
    ]


class tm_session_options(ctypes.Structure):
    _fields_ = [
        ("version", ctypes.c_uint),
        ("host", ctypes.c_char_p),
        ("port", ctypes.c_uint),
    ]


# -- finding the shared library --------------------------------------------

_SONAME = "libtlsmail.so.%d" % SONAME_MAJOR


def _candidates() -> List[str]:
    """Where to look, in order: $TLSMAIL_LIBRARY; the prefix this package is
    installed under; the dynamic loader's search (find_library); the build
    tree ($TLSMAIL_BUILD_DIR, else <repo>/build next to bindings/python)."""
    out: List[str] = []
    env = os.environ.get("TLSMAIL_LIBRARY")
    if env:
        return [env]  # explicit: nothing else is tried
    here = Path(__file__).resolve().parent
    multiarch = sysconfig.get_config_var("MULTIARCH") or ""
    for parent in here.parents:
        if parent.name in ("lib", "lib64", "lib32") and parent.parent != parent:
            prefix = parent.parent
            for libdir in ([prefix / "lib" / multiarch] if multiarch else []) + [
                    prefix / "lib64", prefix / "lib"]:
                out.append(str(libdir / _SONAME))
            break
    found = ctypes.util.find_library("tlsmail")
    if found:
        out.append(found)
    build = os.environ.get("TLSMAIL_BUILD_DIR")
    if build:
        out.append(str(Path(build) / _SONAME))
    out.append(str(here.parent.parent.parent / "build" / _SONAME))
    out.append(_SONAME)  # plain dlopen: LD_LIBRARY_PATH, ld.so.cache
    return out


def _load() -> ctypes.CDLL:
    tried: List[str] = []
    for cand in _candidates():
        if os.sep in cand and not os.path.exists(cand):
            tried.append(cand + " (missing)")
            continue
        try:
            return ctypes.CDLL(cand)
        except OSError as e:
            tried.append("%s (%s)" % (cand, e))
    raise ImportError("tlsmail: cannot load libtlsmail; set TLSMAIL_LIBRARY to the full path "
                      "of %s (tried: %s)" % (_SONAME, "; ".join(tried)))


lib = _load()
library_path: Optional[str] = getattr(lib, "_name", None)

_c = ctypes
_P = ctypes.POINTER
_vp = ctypes.c_void_p

# (name, restype, argtypes)
_PROTOTYPES = [
    ("tm_version", _c.c_char_p, []),
    ("tm_version_number", _c.c_uint, []),
    ("tm_tls_backend", _c.c_char_p, []),
    ("tm_strerror", _c.c_char_p, [_c.c_int]),
    ("tm_result_name", _c.c_char_p, [_c.c_int]),
    ("tm_policy_source_name", _c.c_char_p, [_c.c_int]),
    ("tm_floor_name", _c.c_char_p, [_c.c_int]),
    ("tm_dane_name", _c.c_char_p, [_c.c_int]),
    ("tm_verified_by_name", _c.c_char_p, [_c.c_int]),
    ("tm_mta_sts_name", _c.c_char_p, [_c.c_int]),
    ("tm_policy_init", _c.c_int, [_P(tm_policy), _c.c_uint]),
    ("tm_status_init", _c.c_int, [_P(tm_delivery_status), _c.c_uint]),
    ("tm_status_size", _c.c_size_t, []),
    ("tm_abi_layout", _c.c_char_p, []),
    ("tm_status_json", _c.c_int,
     [_P(tm_delivery_status), _P(tm_rcpt_status), _c.c_size_t, _c.c_char_p, _c.c_size_t]),
    ("tm_context_options_init", _c.c_int, [_P(tm_context_options), _c.c_uint]),
    ("tm_context_new", _c.c_int, [_P(_vp), _P(tm_context_options)]),
    ("tm_context_free", None, [_vp]),
    ("tm_context_reload_ca", _c.c_int, [_vp]),
    ("tm_message_init", _c.c_int, [_P(tm_message), _c.c_uint]),
    ("tm_session_options_init", _c.c_int, [_P(tm_session_options), _c.c_uint]),
    ("tm_session_open", _c.c_int,
     [_P(_vp), _vp, _c.c_char_p, _P(tm_session_options), _P(tm_delivery_status)]),
    ("tm_starttls", _c.c_int, [_vp, _P(tm_policy), _P(tm_delivery_status)]),
    ("tm_send", _c.c_int, [_vp, _P(tm_message), _P(tm_delivery_status)]),
    ("tm_session_close", None, [_vp]),
    ("tm_deliver", _c.c_int,
     [_vp, _P(tm_message), _P(tm_policy), _P(tm_session_options), _P(tm_delivery_status)]),
    ("tm_domain_policy_set", _c.c_int, [_vp, _c.c_char_p, _P(tm_policy)]),
    ("tm_domain_policy_get", _c.c_int, [_vp, _c.c_char_p, _P(tm_policy)]),
    ("tm_domain_policy_delete", _c.c_int, [_vp, _c.c_char_p]),
    ("tm_recipient_floor_set", _c.c_int, [_vp, _c.c_char_p, _c.c_int]),
    ("tm_recipient_floor_get", _c.c_int, [_vp, _c.c_char_p, _P(_c.c_int)]),
    ("tm_settings_list", _c.c_int, [_vp, _c.c_char_p, _c.c_size_t]),
    ("tm_settings_load", _c.c_int, [_vp, _c.c_char_p, _c.c_int, _P(_c.c_int)]),
    ("tm_settings_save", _c.c_int, [_vp, _c.c_char_p]),
    ("tm_sts_cache_load", _c.c_int, [_vp, _c.c_char_p, _P(_c.c_int)]),
    ("tm_sts_cache_save", _c.c_int, [_vp, _c.c_char_p]),
    ("tm_sts_cache_list", _c.c_int, [_vp, _c.c_char_p, _c.c_size_t]),
    ("tm_policy_size", _c.c_size_t, []),
    ("tm_message_size", _c.c_size_t, []),
    ("tm_context_options_size", _c.c_size_t, []),
    ("tm_session_options_size", _c.c_size_t, []),
]

for _name, _res, _args in _PROTOTYPES:
    try:
        _fn = getattr(lib, _name)
    except AttributeError:
        raise ImportError("tlsmail: %s lacks %s (library too old?)"
                          % (library_path, _name)) from None
    _fn.restype = _res
    _fn.argtypes = _args

# -- layout check -----------------------------------------------------------

# The C name of each Structure this binding declares.
STRUCTS = {
    "tm_policy": tm_policy,
    "tm_rcpt_status": tm_rcpt_status,
    "tm_delivery_status": tm_delivery_status,
    "tm_context_options": tm_context_options,
    "tm_message": tm_message,
    "tm_session_options": tm_session_options,
}

# Layout = {struct name: (size, [(field name, offset, size), ...])}
Layout = Dict[str, Tuple[int, List[Tuple[str, int, int]]]]


def parse_layout(text: str) -> Layout:
    """Parses tm_abi_layout()'s text: one line per struct,
    "name size field@offset:size ...".  Raises ValueError when malformed."""
    out: Layout = {}
    for line in text.splitlines():
        words = line.split()
        if not words:
            continue
        if len(words) < 2 or not words[1].isdigit():
            raise ValueError("malformed layout line: %r" % line)
        fields = []
        for w in words[2:]:
            name, _, rest = w.partition("@")
            off, _, size = rest.partition(":")
            if not name or not off.isdigit() or not size.isdigit():
                raise ValueError("malformed field %r in layout line of %s" % (w, words[0]))
            fields.append((name, int(off), int(size)))
        out[words[0]] = (int(words[1]), fields)
    return out


def library_layout() -> Layout:
    """The layout of the public structs as compiled into the loaded library."""
    return parse_layout(lib.tm_abi_layout().decode("ascii"))


def _c_name(py_name: str) -> str:
    # A C member named like a Python keyword gets a trailing "_" (from_).
    return py_name[:-1] if py_name.endswith("_") else py_name


def structure_mismatch(cls: type, c_name: str, layout: Layout) -> Optional[str]:
    """The first difference between ctypes Structure `cls` and the library's
    layout of struct `c_name` (field names, order, offsets, sizes, then the
    struct's size), in words; None when they agree."""
    if c_name not in layout:
        return "%s: the library does not describe this struct" % c_name
    size, want = layout[c_name]
    have = [(_c_name(f[0]), getattr(cls, f[0]).offset, getattr(cls, f[0]).size)
            for f in cls._fields_]  # type: ignore[attr-defined]
    for i in range(max(len(have), len(want))):
        h = have[i] if i < len(have) else None
        w = want[i] if i < len(want) else None
        if h == w:
            continue
        if h is None:
            return "%s: field %d: the binding lacks %s@%d:%d" % (c_name, i, *w)
        if w is None:
            return "%s: field %d: the binding has %s@%d:%d, the library has no such field" % (
                c_name, i, *h)
        if h[0] != w[0]:
            return "%s: field %d: the binding has %s, the library has %s" % (c_name, i, h[0], w[0])
        return "%s.%s: the binding has offset %d size %d, the library offset %d size %d" % (
            c_name, h[0], h[1], h[2], w[1], w[2])
    if ctypes.sizeof(cls) != size:
        return "%s: the binding has %d bytes, the library %d" % (c_name, ctypes.sizeof(cls), size)
    return None


def check_structure(cls: type, c_name: str, layout: Optional[Layout] = None) -> None:
    """Raises ImportError when ctypes Structure `cls` differs from the
    library's struct `c_name` (layout: library_layout() when None)."""
    why = structure_mismatch(cls, c_name, library_layout() if layout is None else layout)
    if why is not None:
        raise ImportError("tlsmail: struct layout mismatch with %s: %s" % (library_path, why))


def check_layout() -> None:
    """Raises ImportError at the first Structure of STRUCTS that differs
    from the library's layout, or when the library's major version is not
    the one this binding was written for."""
    major = lib.tm_version_number() >> 16
    if major != VERSION_MAJOR:
        raise ImportError("tlsmail: %s is version %s, this binding needs %d.x"
                          % (library_path, lib.tm_version().decode(), VERSION_MAJOR))
    try:
        layout = library_layout()
    except (ValueError, UnicodeDecodeError) as e:
        raise ImportError("tlsmail: %s: unreadable tm_abi_layout(): %s" % (library_path, e)) from None
    for c_name, cls in STRUCTS.items():
        check_structure(cls, c_name, layout)


check_layout()
