"""Low-level ctypes mirror of include/tlsmail.h (private).

Every Structure here must match the header field for field; the package
checks ctypes.sizeof() of each against tm_*_size() at import time and raises
ImportError on a mismatch, so a stale binding never corrupts memory.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sysconfig
from pathlib import Path
from typing import List, Optional

# -- constants (the header's macros; FFI cannot expand them) ---------------

TM_ON = 1
TM_UNSET = 0
TM_OFF = -1

TM_POLICY_VERSION = 1
TM_STATUS_VERSION = 1
TM_CONTEXT_OPTIONS_VERSION = 1
TM_MESSAGE_VERSION = 1
TM_SESSION_OPTIONS_VERSION = 1

TM_MAX_RECIPIENTS = 50
TM_ADDRESS_MAX = 256
TM_HOST_MAX = 256
TM_IPADDR_MAX = 48
TM_TEXT_MAX = 512
TM_RCPT_TEXT_MAX = 256
TM_ENHANCED_MAX = 16
TM_STATUS_JSON_MAX = 262144

SONAME_MAJOR = 0  # the soversion this binding was written for

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
        ("rcpt", tm_rcpt_status * TM_MAX_RECIPIENTS),
    ]


# void (*tm_log_fn)(void *arg, int level, const char *message)
tm_log_fn = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p)
# long (*tm_read_fn)(void *arg, unsigned char *buf, size_t size)
tm_read_fn = ctypes.CFUNCTYPE(ctypes.c_long, ctypes.c_void_p,
                              ctypes.POINTER(ctypes.c_ubyte), ctypes.c_size_t)


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
                      "of libtlsmail.so.0 (tried: %s)" % "; ".join(tried))


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
    ("tm_policy_init", _c.c_int, [_P(tm_policy)]),
    ("tm_status_init", _c.c_int, [_P(tm_delivery_status)]),
    ("tm_status_size", _c.c_size_t, []),
    ("tm_status_json", _c.c_int, [_P(tm_delivery_status), _c.c_char_p, _c.c_size_t]),
    ("tm_context_options_init", _c.c_int, [_P(tm_context_options)]),
    ("tm_context_new", _c.c_int, [_P(_vp), _P(tm_context_options)]),
    ("tm_context_free", None, [_vp]),
    ("tm_message_init", _c.c_int, [_P(tm_message)]),
    ("tm_session_options_init", _c.c_int, [_P(tm_session_options)]),
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

STRUCT_SIZES = {
    "tm_delivery_status": (tm_delivery_status, lib.tm_status_size),
    "tm_policy": (tm_policy, lib.tm_policy_size),
    "tm_message": (tm_message, lib.tm_message_size),
    "tm_context_options": (tm_context_options, lib.tm_context_options_size),
    "tm_session_options": (tm_session_options, lib.tm_session_options_size),
}


def check_layout() -> None:
    """Raises ImportError when a Structure's size differs from the library's."""
    bad = []
    for name, (cls, size_fn) in STRUCT_SIZES.items():
        if ctypes.sizeof(cls) != size_fn():
            bad.append("%s: binding %d bytes, library %d" % (name, ctypes.sizeof(cls), size_fn()))
    if bad:
        raise ImportError("tlsmail: struct layout mismatch with %s: %s"
                          % (library_path, ", ".join(bad)))
    major = lib.tm_version_number() >> 16
    if major != SONAME_MAJOR:
        raise ImportError("tlsmail: %s is version %s, this binding needs %d.x"
                          % (library_path, lib.tm_version().decode(), SONAME_MAJOR))


check_layout()
