"""Tests of the tlsmail Python binding.

Unit tests need only the library (TLSMAIL_LIBRARY or the build tree).
Delivery tests need the real peers: run through tests/peers/peers.py, which
sets TM_TEST_*.  Without TM_TEST_PORT they are skipped, unless CI=true, in
which case they fail.

    TLSMAIL_LIBRARY=build/libtlsmail.so.1 PYTHONPATH=bindings/python \\
    /usr/bin/python3 tests/peers/peers.py run --dir /tmp/p -- \\
        /usr/bin/python3 -m unittest discover -s bindings/python/tests -v
"""

import ctypes
import io
import json
import os
import tempfile
import threading
import time
import unittest
import uuid
from pathlib import Path

import tlsmail
from tlsmail import _ffi

BODY = b"Subject: tlsmail python test\r\nFrom: sender@tm.test\r\n\r\nHello from Python.\r\n"


class StructLayout(unittest.TestCase):
    def test_sizes_match_library(self):
        self.assertEqual(ctypes.sizeof(_ffi.tm_delivery_status), _ffi.lib.tm_status_size())
        self.assertEqual(ctypes.sizeof(_ffi.tm_policy), _ffi.lib.tm_policy_size())
        self.assertEqual(ctypes.sizeof(_ffi.tm_message), _ffi.lib.tm_message_size())
        self.assertEqual(ctypes.sizeof(_ffi.tm_context_options),
                         _ffi.lib.tm_context_options_size())
        self.assertEqual(ctypes.sizeof(_ffi.tm_session_options),
                         _ffi.lib.tm_session_options_size())

    def test_layout_lists_every_binding_struct(self):
        layout = _ffi.library_layout()
        self.assertEqual(set(layout), set(_ffi.STRUCTS))
        for name, cls in _ffi.STRUCTS.items():
            self.assertIsNone(_ffi.structure_mismatch(cls, name, layout))
            self.assertEqual(len(layout[name][1]), len(cls._fields_))
        _ffi.check_layout()

    def test_swapped_fields_are_rejected(self):
        # Same names, same types, same total size: only the order differs,
        # which a size check alone would never see.
        fields = list(_ffi.tm_policy._fields_)
        fields[1], fields[2] = fields[2], fields[1]
        swapped = type("scratch_policy", (ctypes.Structure,), {"_fields_": fields})
        self.assertEqual(ctypes.sizeof(swapped), ctypes.sizeof(_ffi.tm_policy))
        with self.assertRaises(ImportError) as cm:
            _ffi.check_structure(swapped, "tm_policy")
        self.assertIn("tm_policy: field 1", str(cm.exception))
        self.assertIn("skip_verify", str(cm.exception))

        # Two same-sized fields swapped deep inside the status.
        fields = list(_ffi.tm_delivery_status._fields_)
        i = [f[0] for f in fields].index("rcpt_deferred")
        fields[i], fields[i + 1] = fields[i + 1], fields[i]
        swapped = type("scratch_status", (ctypes.Structure,), {"_fields_": fields})
        with self.assertRaises(ImportError) as cm:
            _ffi.check_structure(swapped, "tm_delivery_status")
        self.assertIn("rcpt_uncertain", str(cm.exception))

    def test_offset_size_and_missing_fields_are_rejected(self):
        def scratch(fields):
            return type("scratch", (ctypes.Structure,), {"_fields_": fields})

        base = list(_ffi.tm_session_options._fields_)
        cases = {
            "field type (size)": base[:2] + [("port", ctypes.c_ulonglong)],
            "missing field": base[:2],
            "extra field": base + [("extra", ctypes.c_int)],
            "padding (offset)": [base[0], ("pad", ctypes.c_int)] + base[1:],
            "renamed field": base[:2] + [("portnum", ctypes.c_uint)],
        }
        for what, fields in cases.items():
            with self.subTest(what):
                self.assertIsNotNone(_ffi.structure_mismatch(
                    scratch(fields), "tm_session_options", _ffi.library_layout()))
                with self.assertRaises(ImportError):
                    _ffi.check_structure(scratch(fields), "tm_session_options")
        # Same fields, bigger struct (trailing alignment): the total size.
        packed = type("scratch", (ctypes.Structure,), {"_fields_": base, "_pack_": 1})
        layout = _ffi.library_layout()
        size, fl = layout["tm_session_options"]
        layout["tm_session_options"] = (size + 8, fl)
        self.assertIn("bytes", _ffi.structure_mismatch(_ffi.tm_session_options,
                                                       "tm_session_options", layout))
        self.assertIsNotNone(_ffi.structure_mismatch(packed, "tm_session_options",
                                                     _ffi.library_layout()))
        with self.assertRaises(ImportError):
            _ffi.check_structure(_ffi.tm_policy, "tm_no_such_struct")

    # The fields each struct gained last, in order, where the library has
    # them: tls_resumed, the DANE and the MTA-STS fields end
    # tm_delivery_status, ca_path, the DNSSEC and the MTA-STS options
    # tm_context_options.
    NEW_FIELDS = {
        "tm_delivery_status": ["tls_resumed", "dane", "mx_dnssec", "cert_verified_by",
                               "dane_tlsa", "mta_sts", "mta_sts_id", "mta_sts_cached",
                               "mta_sts_would_refuse", "mta_sts_error"],
        "tm_context_options": ["ca_path", "dnssec_resolver", "dnssec_trust_resolver", "dane",
                               "mta_sts", "sts_fetch", "sts_fetch_arg", "sts_store",
                               "sts_lookup", "sts_cache_arg", "sts_cache_max",
                               "sts_timeout_ms", "sts_https_address", "sts_https_port"],
    }

    def test_new_fields_are_checked(self):
        layout = _ffi.library_layout()
        for c_name, new in self.NEW_FIELDS.items():
            cls = _ffi.STRUCTS[c_name]
            n = len(new)
            self.assertEqual([f[0] for f in layout[c_name][1][-n:]], new)
            self.assertEqual([f[0] for f in cls._fields_[-n:]], new)
            # A binding without any one of the trailing fields (the layout
            # before) is refused at import.  Without an int at the end the
            # struct may even keep its size (on LP64 it fits in what was
            # tail padding): only the field-by-field check sees it.
            for k in range(1, n + 1):
                missing = new[n - k]
                with self.subTest(c_name, missing=missing):
                    old = type("scratch", (ctypes.Structure,), {"_fields_": cls._fields_[:-k]})
                    why = _ffi.structure_mismatch(old, c_name, layout)
                    self.assertIsNotNone(why)
                    self.assertIn("lacks " + missing, why)
                    with self.assertRaises(ImportError):
                        _ffi.check_structure(old, c_name, layout)

    def test_dane_fields_types(self):
        # dane_tlsa is char[16]; the other three are ints.
        size, fields = _ffi.library_layout()["tm_delivery_status"]
        by_name = {f[0]: f for f in fields}
        self.assertEqual(by_name["dane_tlsa"][2], 16)
        for name in ("dane", "mx_dnssec", "cert_verified_by"):
            self.assertEqual(by_name[name][2], ctypes.sizeof(ctypes.c_int))
        opts = {f[0]: f for f in _ffi.library_layout()["tm_context_options"][1]}
        self.assertEqual(opts["dnssec_resolver"][2], ctypes.sizeof(ctypes.c_char_p))
        self.assertEqual(opts["dane"][2], ctypes.sizeof(ctypes.c_int))

    def test_mta_sts_fields_types(self):
        # mta_sts_id is char[33], mta_sts_error char[512], the rest ints;
        # the options' callbacks and strings are pointers.
        _, fields = _ffi.library_layout()["tm_delivery_status"]
        by_name = {f[0]: f for f in fields}
        self.assertEqual(by_name["mta_sts_id"][2], _ffi.TM_STS_ID_TEXT_MAX)
        self.assertEqual(by_name["mta_sts_error"][2], _ffi.TM_TEXT_MAX)
        for name in ("mta_sts", "mta_sts_cached", "mta_sts_would_refuse"):
            self.assertEqual(by_name[name][2], ctypes.sizeof(ctypes.c_int))
        opts = {f[0]: f for f in _ffi.library_layout()["tm_context_options"][1]}
        for name in ("sts_fetch", "sts_fetch_arg", "sts_store", "sts_lookup", "sts_cache_arg",
                     "sts_https_address"):
            self.assertEqual(opts[name][2], ctypes.sizeof(ctypes.c_void_p), name)
        for name in ("mta_sts", "sts_cache_max", "sts_timeout_ms", "sts_https_port"):
            self.assertEqual(opts[name][2], ctypes.sizeof(ctypes.c_int), name)

    def test_context_options_version_2(self):
        self.assertEqual(_ffi.TM_CONTEXT_OPTIONS_VERSION, 2)
        o = _ffi.tm_context_options()
        o.ca_path = b"/nonexistent"
        self.assertEqual(_ffi.lib.tm_context_options_init(ctypes.byref(o), 2), 0)
        self.assertEqual(o.version, 2)
        self.assertIsNone(o.ca_path)  # reset like every other field
        self.assertIsNone(o.dnssec_resolver)
        self.assertEqual((o.dnssec_trust_resolver, o.dane), (0, 0))
        self.assertEqual((o.mta_sts, o.sts_cache_max, o.sts_timeout_ms, o.sts_https_port),
                         (0, 0, 0, 0))
        self.assertIsNone(o.sts_https_address)
        for cb in (o.sts_fetch, o.sts_store, o.sts_lookup):
            self.assertFalse(cb)  # a NULL function pointer
        self.assertIsNone(o.sts_fetch_arg)
        self.assertIsNone(o.sts_cache_arg)
        # Version 1 (no ca_path) is still accepted; 3 is not known.
        self.assertEqual(_ffi.lib.tm_context_options_init(ctypes.byref(o), 1), 0)
        self.assertEqual(_ffi.lib.tm_context_options_init(ctypes.byref(o), 3), -1)

    def test_parse_layout(self):
        self.assertEqual(_ffi.parse_layout("tm_x 8 a@0:4 b@4:4\ntm_y 4 c@0:4\n"),
                         {"tm_x": (8, [("a", 0, 4), ("b", 4, 4)]), "tm_y": (4, [("c", 0, 4)])})
        for bad in ("tm_x eight a@0:4\n", "tm_x 8 a@0\n", "tm_x 8 @0:4\n"):
            with self.assertRaises(ValueError):
                _ffi.parse_layout(bad)

    def test_version(self):
        self.assertRegex(tlsmail.version(), r"^\d+\.\d+\.\d+$")
        self.assertIn("TLS", tlsmail.tls_backend())

    def test_init_functions_give_versions(self):
        st = _ffi.tm_delivery_status()
        self.assertEqual(_ffi.lib.tm_status_init(ctypes.byref(st), _ffi.TM_STATUS_VERSION), 0)
        self.assertEqual(st.version, _ffi.TM_STATUS_VERSION)
        p = _ffi.tm_policy()
        self.assertEqual(_ffi.lib.tm_policy_init(ctypes.byref(p), _ffi.TM_POLICY_VERSION), 0)
        self.assertEqual(p.version, _ffi.TM_POLICY_VERSION)
        m = _ffi.tm_message()
        self.assertEqual(_ffi.lib.tm_message_init(ctypes.byref(m), _ffi.TM_MESSAGE_VERSION), 0)
        self.assertEqual(m.version, _ffi.TM_MESSAGE_VERSION)
        # A version the library does not know is refused.
        self.assertEqual(_ffi.lib.tm_status_init(ctypes.byref(st), 99), -1)
        self.assertEqual(_ffi.lib.tm_message_init(ctypes.byref(m), 0), -1)


class PolicyMapping(unittest.TestCase):
    def test_tristate(self):
        cases = [(None, _ffi.TM_UNSET), (True, _ffi.TM_ON), (False, _ffi.TM_OFF)]
        for value, c in cases:
            p = tlsmail.Policy(require_tls=value, skip_verify=value, keep_unverified_tls=value)._to_c()
            self.assertEqual((p.require_tls, p.skip_verify, p.keep_unverified_tls), (c, c, c))
            self.assertEqual(tlsmail.Policy._from_c(p),
                             tlsmail.Policy(value, value, value))

    def test_default_is_all_unset(self):
        self.assertEqual(tlsmail.Policy(), tlsmail.Policy(None, None, None))
        p = tlsmail.Policy()._to_c()
        self.assertEqual((p.version, p.require_tls, p.skip_verify, p.keep_unverified_tls),
                         (1, 0, 0, 0))


class Errors(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.ctx = tlsmail.Context(helo_name="client.tm.test")

    @classmethod
    def tearDownClass(cls):
        cls.ctx.close()

    def test_strerror(self):
        self.assertTrue(tlsmail.strerror(-9))
        self.assertEqual(tlsmail.strerror(-9999), "unknown error")

    def test_bad_address_raises_invalid_argument(self):
        with self.assertRaises(tlsmail.InvalidArgument) as cm:
            self.ctx.deliver("a@tm.test", "bad\r\nRCPT TO:<x@y>@tm.test", BODY)
        self.assertEqual(cm.exception.code, tlsmail.ErrorCode.EADDRESS)
        self.assertIsInstance(cm.exception, ValueError)
        self.assertEqual(cm.exception.status.result, tlsmail.Result.BOUNCED)

    def test_no_recipients(self):
        with self.assertRaises(tlsmail.InvalidArgument):
            self.ctx.deliver("a@tm.test", [], BODY)

    def test_recipients_are_not_capped(self):
        # 0.1 refused more than 50 recipients (ETOOMANY); now they reach
        # the network: here a loopback port that refuses connections.
        import socket
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))  # bound, never listening: refused
            port = s.getsockname()[1]
            to = ["r%d@tm.test" % i for i in range(120)]
            st = self.ctx.deliver("a@tm.test", to, BODY, host="127.0.0.1", port=port)
        self.assertEqual(st.result, tlsmail.Result.DEFERRED)
        self.assertEqual(st.error, tlsmail.ErrorCode.ECONNECT)

    def test_nul_in_argument(self):
        with self.assertRaises(tlsmail.InvalidArgument):
            self.ctx.deliver("a\0@tm.test", "b@tm.test", BODY)

    def test_bad_data_type(self):
        with self.assertRaises(TypeError):
            self.ctx.deliver("a@tm.test", "b@tm.test", 42)  # type: ignore[arg-type]

    def test_bad_ca_file(self):
        with self.assertRaises(tlsmail.CAFileError) as cm:
            tlsmail.Context(ca_file="/nonexistent/ca.pem")
        self.assertEqual(cm.exception.code, tlsmail.ErrorCode.ECAFILE)

    def test_bad_ca_path(self):
        # A directory without a CA certificate, or none at all: ECAFILE at
        # creation (ca_path reaches the library; the system store is not
        # used instead).  str and PathLike are both taken.
        with tempfile.TemporaryDirectory() as d:
            (Path(d) / "junk.pem").write_text("not a certificate\n")
            for path in (d, Path(d), Path(d) / "missing"):
                with self.subTest(str(path)):
                    with self.assertRaises(tlsmail.CAFileError) as cm:
                        tlsmail.Context(ca_path=path)
                    self.assertEqual(cm.exception.code, tlsmail.ErrorCode.ECAFILE)
        with self.assertRaises(TypeError):
            tlsmail.Context(ca_path=42)  # type: ignore[arg-type]
        with self.assertRaises(tlsmail.InvalidArgument):
            tlsmail.Context(ca_path="/tmp/a\0b")

    def test_reload_ca_system_store_and_closed(self):
        self.ctx.reload_ca()  # the system store, read again
        c = tlsmail.Context()
        c.close()
        with self.assertRaises(tlsmail.SessionStateError):
            c.reload_ca()

    def test_bad_option(self):
        with self.assertRaises(tlsmail.InvalidArgument):
            tlsmail.Context(port=-1)
        with self.assertRaises(tlsmail.InvalidArgument):
            tlsmail.Context(timeout=1, command_timeout_ms=1000)

    def test_closed_context(self):
        c = tlsmail.Context()
        c.close()
        c.close()  # idempotent
        with self.assertRaises(tlsmail.SessionStateError):
            c.deliver("a@tm.test", "b@tm.test", BODY)

    def test_exception_hierarchy(self):
        for cls in (tlsmail.InvalidArgument, tlsmail.OutOfMemory, tlsmail.CAFileError,
                    tlsmail.SessionStateError, tlsmail.MessageReadError,
                    tlsmail.DeliveryError, tlsmail.TLSRequired):
            self.assertTrue(issubclass(cls, tlsmail.TlsmailError))
        self.assertTrue(issubclass(tlsmail.TLSRequired, tlsmail.DeliveryError))


class StatusJson(unittest.TestCase):
    def test_empty_status(self):
        st = tlsmail.DeliveryStatus()
        self.assertIs(st.tls_resumed, False)
        d = st.as_dict()
        self.assertEqual(d["result"], "none")
        self.assertIs(d["tls"], False)
        self.assertIs(d["tls-resumed"], False)
        self.assertEqual(d["recipients"], [])

    def test_empty_status_dane_fields(self):
        # Python-built and library-initialised statuses agree: DANE off.
        for st in (tlsmail.DeliveryStatus(),
                   tlsmail.DeliveryStatus._from_c(tlsmail._new_status())):
            with self.subTest(raw=st._raw is not None):
                self.assertEqual((st.dane, st.mx_dnssec, st.cert_verified_by, st.dane_tlsa),
                                 ("off", False, "", ""))
                d = st.as_dict()
                self.assertEqual(d["dane"], "off")
                self.assertIs(d["mx-dnssec"], False)
                self.assertEqual(d["certificate-verified-by"], "")
                self.assertEqual(d["dane-tlsa"], "")

    def test_dane_names(self):
        # The names the binding reports are the library's, value for value.
        names = ["off", "insecure", "no-tlsa", "verified", "tlsa-unusable", "failed", "pending"]
        by = ["", "pkix", "dane"]
        raw = tlsmail._new_status()
        for v, name in enumerate(names):
            raw.dane = v
            self.assertEqual(tlsmail.DeliveryStatus._from_c(raw).dane, name)
        for v, name in enumerate(by):
            raw.cert_verified = 1 if v else 0
            raw.cert_verified_by = v
            self.assertEqual(tlsmail.DeliveryStatus._from_c(raw).cert_verified_by, name)

    def test_dane_status_round_trip(self):
        raw = tlsmail._new_status()
        raw.result = 1
        raw.tls = 1
        raw.cert_verified = 1
        raw.dane = 3  # TM_DANE_VERIFIED
        raw.mx_dnssec = 1
        raw.cert_verified_by = 2  # TM_VERIFIED_BY_DANE
        raw.dane_tlsa = b"3 1 1"
        st = tlsmail.DeliveryStatus._from_c(raw)
        self.assertEqual((st.dane, st.mx_dnssec, st.cert_verified_by, st.dane_tlsa),
                         ("verified", True, "dane", "3 1 1"))
        d = st.as_dict()
        self.assertEqual((d["dane"], d["mx-dnssec"], d["certificate-verified-by"],
                          d["dane-tlsa"]), ("verified", True, "dane", "3 1 1"))

    def test_empty_status_mta_sts_fields(self):
        # Python-built and library-initialised statuses agree: MTA-STS off.
        for st in (tlsmail.DeliveryStatus(),
                   tlsmail.DeliveryStatus._from_c(tlsmail._new_status())):
            with self.subTest(raw=st._raw is not None):
                self.assertEqual((st.mta_sts, st.mta_sts_id, st.mta_sts_cached,
                                  st.mta_sts_would_refuse, st.mta_sts_error),
                                 ("off", "", False, False, ""))
                d = st.as_dict()
                self.assertEqual((d["mta-sts"], d["mta-sts-id"], d["mta-sts-cached"],
                                  d["mta-sts-would-refuse"], d["mta-sts-error"]),
                                 ("off", "", False, False, ""))
        # A zeroed struct (not even tm_status_init) reads the same.
        self.assertEqual(tlsmail.DeliveryStatus._from_c(_ffi.tm_delivery_status()).mta_sts, "off")

    def test_mta_sts_names(self):
        # The enum's names are the library's, value for value.
        names = ["off", "no-policy", "none", "testing", "enforce", "fetch-failed"]
        self.assertEqual([str(m) for m in tlsmail.MtaSts], names)
        self.assertEqual([int(m) for m in tlsmail.MtaSts], list(range(6)))
        raw = tlsmail._new_status()
        for v, name in enumerate(names):
            self.assertEqual(_ffi.lib.tm_mta_sts_name(v).decode(), name)
            raw.mta_sts = v
            st = tlsmail.DeliveryStatus._from_c(raw)
            self.assertEqual(st.mta_sts, name)
            self.assertEqual(st.mta_sts, str(tlsmail.MtaSts(v)))
            self.assertEqual(st.as_dict()["mta-sts"], name)

    def test_mta_sts_status_round_trip(self):
        raw = tlsmail._new_status()
        raw.result = 2  # deferred
        raw.error = tlsmail.ErrorCode.ETLSREQUIRED
        raw.mta_sts = int(tlsmail.MtaSts.TESTING)
        raw.mta_sts_id = b"20261201T000000"
        raw.mta_sts_cached = 1
        raw.mta_sts_would_refuse = 1
        raw.mta_sts_error = b'mx-other.example matches no "mx" of the policy'
        st = tlsmail.DeliveryStatus._from_c(raw)
        self.assertEqual((st.mta_sts, st.mta_sts_id, st.mta_sts_cached,
                          st.mta_sts_would_refuse, st.mta_sts_error),
                         ("testing", "20261201T000000", True, True,
                          'mx-other.example matches no "mx" of the policy'))
        d = st.as_dict()
        self.assertEqual((d["mta-sts"], d["mta-sts-id"], d["mta-sts-cached"],
                          d["mta-sts-would-refuse"], d["mta-sts-error"]),
                         ("testing", "20261201T000000", True, True,
                          'mx-other.example matches no "mx" of the policy'))
        # The longest id and error fit, NUL-terminated.
        raw.mta_sts_id = b"A" * 32
        raw.mta_sts_error = b"e" * (_ffi.TM_TEXT_MAX - 1)
        st = tlsmail.DeliveryStatus._from_c(raw)
        self.assertEqual((len(st.mta_sts_id), len(st.mta_sts_error)), (32, _ffi.TM_TEXT_MAX - 1))
        self.assertEqual(st.as_dict()["mta-sts-id"], "A" * 32)

    def test_status_from_c_round_trip(self):
        raw = _ffi.tm_delivery_status()
        _ffi.lib.tm_status_init(ctypes.byref(raw), _ffi.TM_STATUS_VERSION)
        raw.result = 1
        raw.code = 250
        raw.enhanced_code = b"2.0.0"
        raw.message = b'queued "as" \x01X\xff'
        raw.tls = 1
        raw.cert_verified = 1
        raw.tls_resumed = 1
        raw.mx_host = b"mx.example.org"
        raw.mx_port = 25
        raw.rcpt_count = 1
        raw.rcpt_delivered = 1
        raw.transactions = 1
        rcpts = (_ffi.tm_rcpt_status * 2)()  # room for more than were sent
        rcpts[0].address = b"you@example.org"
        rcpts[0].result = 1
        rcpts[0].code = 250
        st = tlsmail.DeliveryStatus._from_c(raw, rcpts)
        self.assertTrue(st.delivered)
        self.assertEqual(len(st.recipients), 1)
        self.assertEqual(st.recipients[0].address, "you@example.org")
        self.assertTrue(st.recipients[0].delivered)
        self.assertEqual((st.rcpt_count, st.rcpt_delivered, st.transactions), (1, 1, 1))
        self.assertIs(st.tls_resumed, True)
        d = json.loads(st.to_json())  # control chars and bad UTF-8 escaped
        self.assertEqual(d["result"], "delivered")
        self.assertEqual(d["code"], 250)
        self.assertIs(d["certificate-verified"], True)
        self.assertIs(d["tls-resumed"], True)
        self.assertEqual(d["mx-host"], "mx.example.org")
        self.assertEqual(d["recipients"][0]["address"], "you@example.org")
        self.assertEqual(len(d["recipients"]), 1)
        self.assertEqual(d["recipient-counts"]["delivered"], 1)
        self.assertEqual(d["transactions"], 1)
        self.assertEqual(str(st.result), "delivered")


class DnssecOptions(unittest.TestCase):
    def test_mapping(self):
        # None / False / True, as the C fields get them.
        cases = [
            (dict(), (None, 0, 0)),
            (dict(dnssec_resolver="127.0.0.1:5353"), (b"127.0.0.1:5353", 0, 0)),
            (dict(dnssec_trust_resolver=True), (None, _ffi.TM_ON, 0)),
            (dict(dane=False), (None, 0, _ffi.TM_OFF)),
            (dict(dane=True), (None, 0, _ffi.TM_ON)),
        ]
        for kw, want in cases:
            with self.subTest(**kw):
                o = _ffi.tm_context_options()
                _ffi.lib.tm_context_options_init(ctypes.byref(o), _ffi.TM_CONTEXT_OPTIONS_VERSION)
                args = dict(dnssec_resolver=None, dnssec_trust_resolver=False, dane=None)
                args.update(kw)
                tlsmail._set_dnssec_options(o, **args)
                self.assertEqual((o.dnssec_resolver, o.dnssec_trust_resolver, o.dane), want)

    def test_contexts_are_created(self):
        for kw in (dict(dnssec_resolver="127.0.0.1:5353"), dict(dnssec_resolver="127.0.0.1"),
                   dict(dnssec_resolver="127.0.0.1:5353", dane=False),
                   dict(dnssec_trust_resolver=True, dns_server="127.0.0.1:5353"),
                   dict(dnssec_trust_resolver=True), dict(dane=True), dict(dane=False)):
            with self.subTest(**kw):
                with tlsmail.Context(**kw) as c:
                    self.assertFalse(c.closed)

    def test_invalid_resolver_is_einval(self):
        # Checked by tm_context_new like dns_server ("IP" or "IP:PORT").
        for bad in ("not-an-ip", "127.0.0.1:0", "127.0.0.1:65536", "127.0.0.1:"):
            with self.subTest(bad):
                with self.assertRaises(tlsmail.InvalidArgument) as cm:
                    tlsmail.Context(dnssec_resolver=bad)
                self.assertEqual(cm.exception.code, tlsmail.ErrorCode.EINVAL)
        with self.assertRaises(tlsmail.InvalidArgument):  # the binding's NUL check
            tlsmail.Context(dnssec_resolver="127.0.0.1\0")
        with self.assertRaises(TypeError):
            tlsmail.Context(dnssec_resolver=5353)  # type: ignore[arg-type]


def _sts_options(**kw):
    o = _ffi.tm_context_options()
    _ffi.lib.tm_context_options_init(ctypes.byref(o), _ffi.TM_CONTEXT_OPTIONS_VERSION)
    args = dict(mta_sts=None, sts_cache_max=None, sts_timeout_ms=None,
                sts_https_address=None, sts_https_port=None)
    args.update(kw)
    tlsmail._set_sts_options(o, **args)
    return o


# A far-future expiry (2100-01-01), so that the entry never expires in a test.
FAR_FUTURE = 4102444800


def _sts_line(domain="example.org", policy_id="20261201", mode="enforce", max_age=86400,
              mx="mx1.example.org,*.mx.example.org", expires=FAR_FUTURE):
    now = int(time.time())
    return "policy %s %s %d %d %d %s %d %s" % (domain, policy_id, now, expires, now, mode,
                                                max_age, mx)


class MtaStsOptions(unittest.TestCase):
    def test_mapping(self):
        # None / True / False as the C field gets it: 0 and TM_ON are on.
        for mta_sts, want in ((None, 0), (True, _ffi.TM_ON), (False, _ffi.TM_OFF)):
            with self.subTest(mta_sts=mta_sts):
                self.assertEqual(_sts_options(mta_sts=mta_sts).mta_sts, want)
        o = _sts_options(sts_cache_max=10, sts_timeout_ms=1500,
                         sts_https_address="127.0.0.1", sts_https_port=8443)
        self.assertEqual((o.sts_cache_max, o.sts_timeout_ms, o.sts_https_address,
                          o.sts_https_port), (10, 1500, b"127.0.0.1", 8443))
        o = _sts_options()
        self.assertEqual((o.mta_sts, o.sts_cache_max, o.sts_timeout_ms, o.sts_https_port),
                         (0, 0, 0, 0))
        self.assertIsNone(o.sts_https_address)

    def test_bad_values_are_einval(self):
        for kw in (dict(sts_https_port=65536), dict(sts_https_port=-1),
                   dict(sts_cache_max=-1), dict(sts_timeout_ms=2 ** 32),
                   dict(sts_timeout_ms=True), dict(sts_https_address="127.0.0.1\0")):
            with self.subTest(**kw):
                with self.assertRaises(tlsmail.InvalidArgument):
                    _sts_options(**kw)
        # The library checks the address: an IP address, not a name.
        for bad in ("mta-sts.example.org", "not-an-ip", "127.0.0.1.1"):
            with self.subTest(bad):
                with self.assertRaises(tlsmail.InvalidArgument) as cm:
                    tlsmail.Context(sts_https_address=bad)
                self.assertEqual(cm.exception.code, tlsmail.ErrorCode.EINVAL)
        with self.assertRaises(TypeError):
            tlsmail.Context(sts_fetch="https://mta-sts.example.org/")  # type: ignore[arg-type]

    def test_contexts_are_created(self):
        for kw in (dict(mta_sts=False), dict(mta_sts=True), dict(mta_sts=None),
                   dict(sts_cache_max=1, sts_timeout_ms=100),
                   dict(sts_https_address="127.0.0.1", sts_https_port=8443),
                   dict(sts_https_address="::1"),
                   dict(sts_fetch=lambda d, u: None, sts_store=lambda d, e: None,
                        sts_lookup=lambda d: None)):
            with self.subTest(**{k: v for k, v in kw.items() if not callable(v)}):
                with tlsmail.Context(**kw) as c:
                    self.assertFalse(c.closed)
                    self.assertIsNone(c.sts_callback_error)

    def test_callbacks_are_installed_and_kept(self):
        c = tlsmail.Context(sts_fetch=lambda d, u: None, sts_lookup=lambda d: None)
        try:
            # The C thunks live as long as the context (the library keeps
            # their addresses); only the callables given are installed.
            self.assertIsNotNone(c._sts_fetch_cb)
            self.assertIsNotNone(c._sts_lookup_cb)
            self.assertIsNone(c._sts_store_cb)
        finally:
            c.close()


class MtaStsCallbacks(unittest.TestCase):
    """The callbacks as the library calls them: through their C thunks."""

    URL = b"https://mta-sts.example.org/.well-known/mta-sts.txt"
    POLICY = b"version: STSv1\r\nmode: enforce\r\nmx: mx1.example.org\r\nmax_age: 86400\r\n"

    def fetch(self, c, size=_ffi.TM_STS_BODY_MAX, domain=b"example.org"):
        buf = ctypes.create_string_buffer(size)
        n = ctypes.c_size_t(12345)
        rc = c._sts_fetch_cb(None, domain, self.URL, ctypes.addressof(buf), size,
                             ctypes.byref(n))
        return rc, buf.raw[:n.value] if rc == 0 else None

    def lookup(self, c, size=1024):
        buf = ctypes.create_string_buffer(b"\xff" * size, size)
        rc = c._sts_lookup_cb(None, b"example.org", ctypes.addressof(buf), size)
        return rc, buf.value.decode() if rc == 0 else None

    def test_fetch(self):
        seen = []

        def fetch(domain, url):
            seen.append((domain, url))
            return {"example.org": self.POLICY, "text.example": self.POLICY.decode(),
                    "big.example": b"x" * (_ffi.TM_STS_BODY_MAX + 1)}.get(domain)

        with tlsmail.Context(sts_fetch=fetch) as c:
            self.assertEqual(self.fetch(c), (0, self.POLICY))
            self.assertEqual(seen, [("example.org", self.URL.decode())])
            self.assertEqual(self.fetch(c, domain=b"text.example"), (0, self.POLICY))
            # None: no policy (a failure for the library); nothing recorded.
            self.assertEqual(self.fetch(c, domain=b"none.example"),
                             (tlsmail.ErrorCode.ENOTFOUND, None))
            self.assertIsNone(c.sts_callback_error)
            # Larger than the library's buffer: a failure, never an overflow.
            rc, _ = self.fetch(c, domain=b"big.example")
            self.assertEqual(rc, tlsmail.ErrorCode.EIO)
            self.assertIsInstance(c.sts_callback_error, ValueError)
            rc, _ = self.fetch(c, size=10)
            self.assertEqual(rc, tlsmail.ErrorCode.EIO)

    def test_exceptions_never_reach_c(self):
        class Boom(Exception):
            pass

        def fetch(domain, url):
            raise Boom("fetch")

        def store(domain, entry):
            raise Boom("store")

        def lookup(domain):
            raise Boom("lookup")

        with tlsmail.Context(sts_fetch=fetch, sts_store=store, sts_lookup=lookup) as c:
            self.assertEqual(self.fetch(c), (tlsmail.ErrorCode.EIO, None))
            self.assertEqual(str(c.sts_callback_error), "fetch")
            c._sts_store_cb(None, b"example.org", _sts_line().encode())
            self.assertEqual(str(c.sts_callback_error), "store")
            self.assertEqual(self.lookup(c), (tlsmail.ErrorCode.ENOTFOUND, None))
            self.assertEqual(str(c.sts_callback_error), "lookup")
            self.assertIsInstance(c.sts_callback_error, Boom)

        # Not even BaseException subclasses unwind into C.
        def interrupted(domain, url):
            raise KeyboardInterrupt

        with tlsmail.Context(sts_fetch=interrupted) as c:
            self.assertEqual(self.fetch(c), (tlsmail.ErrorCode.EIO, None))
            self.assertIsInstance(c.sts_callback_error, KeyboardInterrupt)
        # A wrong return type is a failure too.
        with tlsmail.Context(sts_fetch=lambda d, u: 42) as c:
            self.assertEqual(self.fetch(c)[0], tlsmail.ErrorCode.EIO)
            self.assertIsInstance(c.sts_callback_error, TypeError)

    def test_store_and_lookup(self):
        db = {}
        line = _sts_line()
        with tlsmail.Context(sts_store=db.__setitem__, sts_lookup=db.get) as c:
            self.assertEqual(self.lookup(c), (tlsmail.ErrorCode.ENOTFOUND, None))
            c._sts_store_cb(None, b"example.org", line.encode())
            self.assertEqual(db, {"example.org": line})
            self.assertEqual(self.lookup(c), (0, line))
            db["example.org"] = line + "\n"  # a stored line's newline is dropped
            self.assertEqual(self.lookup(c), (0, line))
            # Too long for the buffer, or more than one line: not found.
            self.assertEqual(self.lookup(c, size=len(line))[0], tlsmail.ErrorCode.ENOTFOUND)
            self.assertEqual(self.lookup(c, size=len(line) + 1), (0, line))
            db["example.org"] = line + "\n" + line
            self.assertEqual(self.lookup(c)[0], tlsmail.ErrorCode.ENOTFOUND)
            self.assertIsInstance(c.sts_callback_error, ValueError)


class MtaStsCache(unittest.TestCase):
    def setUp(self):
        self.ctx = tlsmail.Context()
        self.dir = tempfile.TemporaryDirectory()
        self.path = Path(self.dir.name) / "sts-cache"

    def tearDown(self):
        self.ctx.close()
        self.dir.cleanup()

    def entries(self, text):
        return [l for l in text.splitlines() if l and not l.startswith("#")]

    def test_empty(self):
        self.assertEqual(self.entries(self.ctx.sts_cache_list()), [])
        self.ctx.sts_cache_save(self.path)
        self.assertEqual(self.entries(self.path.read_text()), [])
        self.ctx.sts_cache_load(self.path)  # an empty cache file is valid
        self.assertEqual(self.entries(self.ctx.sts_cache_list()), [])

    def test_load_list_save_round_trip(self):
        lines = [_sts_line(),
                 _sts_line("testing.example", "abc123", "testing", 604800, "mx.testing.example"),
                 _sts_line("none.example", "1", "none", 31557600, "-")]
        self.path.write_text("# a comment\n\n" + "\n".join(lines) + "\n")
        self.ctx.sts_cache_load(self.path)
        self.assertEqual(sorted(self.entries(self.ctx.sts_cache_list())), sorted(lines))
        saved = Path(self.dir.name) / "saved"
        self.ctx.sts_cache_save(saved)
        with tlsmail.Context() as other:
            other.sts_cache_load(saved)
            self.assertEqual(sorted(self.entries(other.sts_cache_list())), sorted(lines))
        # Loading again replaces each domain's entry, adds nothing.
        newer = _sts_line(policy_id="20270101", mx="mx2.example.org")
        self.path.write_text(newer + "\n")
        self.ctx.sts_cache_load(self.path)
        got = self.entries(self.ctx.sts_cache_list())
        self.assertEqual(len(got), 3)
        self.assertIn(newer, got)
        self.assertNotIn(lines[0], got)

    def test_expired_entries_are_dropped(self):
        past = int(time.time()) - 10
        self.path.write_text(_sts_line(expires=past) + "\n")
        self.ctx.sts_cache_load(self.path)
        self.assertEqual(self.entries(self.ctx.sts_cache_list()), [])

    def test_syntax_error_names_the_line_and_changes_nothing(self):
        good = _sts_line()
        bad_lines = [
            "policy example.net",                                        # too few fields
            good.replace(" enforce ", " strict "),                        # unknown mode
            good.replace("20261201", "id-with-dash"),                    # id not alphanumeric
            good.replace("*.mx.example.org", "*.*.example.org"),         # a bad mx pattern
            good.replace("mx1.example.org,*.mx.example.org", "-"),       # enforce without mx
            "sts " + good[len("policy "):],                               # not "policy"
            good.replace(" 86400 ", " 86400x "),                          # max_age not a number
        ]
        for bad in bad_lines:
            with self.subTest(bad):
                self.path.write_text("# cache\n" + good + "\n" + bad + "\n")
                with self.assertRaises(tlsmail.StsCacheSyntaxError) as cm:
                    self.ctx.sts_cache_load(self.path)
                self.assertEqual(cm.exception.line, 3)
                self.assertEqual(cm.exception.code, tlsmail.ErrorCode.ESYNTAX)
                self.assertIn(":3:", str(cm.exception))
                self.assertIsInstance(cm.exception, tlsmail.SettingsSyntaxError)
                # All or nothing: the good line was not loaded either.
                self.assertEqual(self.entries(self.ctx.sts_cache_list()), [])

    def test_missing_file_is_eio(self):
        with self.assertRaises(tlsmail.TlsmailError) as cm:
            self.ctx.sts_cache_load(Path(self.dir.name) / "missing")
        self.assertEqual(cm.exception.code, tlsmail.ErrorCode.EIO)
        with self.assertRaises(tlsmail.TlsmailError) as cm:
            self.ctx.sts_cache_save(Path(self.dir.name) / "no" / "such" / "dir")
        self.assertEqual(cm.exception.code, tlsmail.ErrorCode.EIO)

    def test_closed_context(self):
        c = tlsmail.Context()
        c.close()
        for call in (c.sts_cache_list, lambda: c.sts_cache_load(self.path),
                     lambda: c.sts_cache_save(self.path)):
            with self.assertRaises(tlsmail.SessionStateError):
                call()


class Settings(unittest.TestCase):
    def setUp(self):
        self.ctx = tlsmail.Context()

    def tearDown(self):
        self.ctx.close()

    def test_domain_policy(self):
        self.assertIsNone(self.ctx.get_domain_policy("example.com"))
        self.ctx.set_domain_policy("Example.COM.", tlsmail.Policy(require_tls=True,
                                                                  skip_verify=False))
        self.assertEqual(self.ctx.get_domain_policy("example.com"),
                         tlsmail.Policy(True, False, None))
        self.assertTrue(self.ctx.delete_domain_policy("example.com"))
        self.assertFalse(self.ctx.delete_domain_policy("example.com"))
        with self.assertRaises(tlsmail.InvalidArgument):
            self.ctx.set_domain_policy("bad domain", tlsmail.Policy())

    def test_floor(self):
        self.assertEqual(self.ctx.get_recipient_floor("bank.example"), tlsmail.Floor.NONE)
        self.ctx.set_recipient_floor("bank.example", "verified")
        self.assertEqual(self.ctx.get_recipient_floor("bank.example"), tlsmail.Floor.VERIFIED)
        self.ctx.set_recipient_floor("bank.example", tlsmail.Floor.TLS)
        self.assertEqual(self.ctx.get_recipient_floor("bank.example"), tlsmail.Floor.TLS)
        with self.assertRaises(tlsmail.InvalidArgument):
            self.ctx.set_recipient_floor("bank.example", "strong")

    def test_floor_dane(self):
        self.assertEqual(int(tlsmail.Floor.DANE), 3)  # TM_FLOOR_DANE
        self.assertEqual(str(tlsmail.Floor.DANE), "dane")
        self.assertEqual(_ffi.lib.tm_floor_name(3), b"dane")
        self.ctx.set_recipient_floor("dane.example", "dane")
        self.assertEqual(self.ctx.get_recipient_floor("dane.example"), tlsmail.Floor.DANE)
        self.ctx.set_recipient_floor("Other.Example.", tlsmail.Floor.DANE)
        self.assertIs(self.ctx.get_recipient_floor("other.example"), tlsmail.Floor.DANE)
        self.assertIn("recipient dane.example floor=dane", self.ctx.list_settings())
        # Saved and loaded in the file format; removed with "none".
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "settings"
            self.ctx.save_settings(path)
            self.assertIn("recipient dane.example floor=dane", path.read_text())
            path.write_text("recipient third.example floor=dane\n")
            self.ctx.load_settings(path)
        self.assertEqual(self.ctx.get_recipient_floor("third.example"), tlsmail.Floor.DANE)
        self.ctx.set_recipient_floor("dane.example", "none")
        self.assertEqual(self.ctx.get_recipient_floor("dane.example"), tlsmail.Floor.NONE)
        # Beyond TM_FLOOR_DANE is the library's TM_EINVAL.
        with self.assertRaises(tlsmail.InvalidArgument) as cm:
            self.ctx.set_recipient_floor("dane.example", 4)
        self.assertEqual(cm.exception.code, tlsmail.ErrorCode.EINVAL)

    def test_list_save_load(self):
        self.ctx.set_domain_policy("a.example", tlsmail.Policy(require_tls=True))
        self.ctx.set_recipient_floor("b.example", "tls")
        text = self.ctx.list_settings()
        self.assertIn("sending a.example require_tls=yes", text)
        self.assertIn("recipient b.example floor=tls", text)
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "settings"
            self.ctx.save_settings(path)
            other = tlsmail.Context()
            try:
                other.set_domain_policy("old.example", tlsmail.Policy(skip_verify=True))
                other.load_settings(path, replace=True)
                self.assertEqual(other.list_settings(), text)
            finally:
                other.close()

    def test_load_syntax_error(self):
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "settings"
            path.write_text("# ok\nsending a.example require_tls=yes\nsending b.example colour=blue\n")
            with self.assertRaises(tlsmail.SettingsSyntaxError) as cm:
                self.ctx.load_settings(path)
            self.assertEqual(cm.exception.line, 3)
            self.assertIsNone(self.ctx.get_domain_policy("a.example"))  # all or nothing
            with self.assertRaises(tlsmail.TlsmailError) as cm2:
                self.ctx.load_settings(Path(d) / "missing")
            self.assertEqual(cm2.exception.code, tlsmail.ErrorCode.EIO)


# ---------------------------------------------------------------------------
# Against the real peers


def _need_peers(test: unittest.TestCase) -> None:
    if os.environ.get("TM_TEST_PORT"):
        return
    msg = ("TM_TEST_PORT is not set: run through tests/peers/peers.py run --dir DIR -- "
           "python3 -m unittest ... to deliver to the real test peers")
    if os.environ.get("CI") == "true":
        test.fail(msg + " (CI=true: failing instead of skipping)")
    test.skipTest(msg)


def _local(tag: str) -> str:
    return "py-%s-%s" % (tag, uuid.uuid4().hex[:10])


def _wait_mail(domain: str, local: str, timeout: float = 10.0) -> bytes:
    d = Path(os.environ["TM_TEST_MAILDIR"]) / domain / local / "new"
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if d.is_dir():
            files = sorted(d.iterdir())
            if files:
                return files[0].read_bytes()
        time.sleep(0.05)
    raise AssertionError("no mail arrived in %s" % d)


def _mail_count(domain: str, local: str) -> int:
    d = Path(os.environ["TM_TEST_MAILDIR"]) / domain / local / "new"
    return len(list(d.iterdir())) if d.is_dir() else 0


def _peers_context(**kw) -> tlsmail.Context:
    """A Context for the peers; the test CA as ca_file unless the caller
    names a trust store (ca_file and/or ca_path)."""
    if "ca_file" not in kw and "ca_path" not in kw:
        kw["ca_file"] = os.environ["TM_TEST_CA"]
    return tlsmail.Context(dns_server=os.environ["TM_TEST_DNS"],
                           port=int(os.environ["TM_TEST_PORT"]), helo_name="client.tm.test",
                           command_timeout_ms=10000, **kw)


def _replace_file(path: Path, data: bytes) -> None:
    """Writes path through a rename, as a certificate rotation would."""
    tmp = path.with_name(path.name + ".new")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _policy(mode, mx=()):
    """An MTA-STS policy text (RFC 8461 3.2)."""
    return ("version: STSv1\r\nmode: %s\r\n%smax_age: 86400\r\n"
            % (mode, "".join("mx: %s\r\n" % m for m in mx))).encode()


def _fetcher(body, calls=None):
    """An sts_fetch callable that serves `body` (None: no policy)."""
    def fetch(domain, url):
        if calls is not None:
            calls.append((domain, url))
        return body
    return fetch


class MtaStsDelivery(unittest.TestCase):
    """MTA-STS through the binding's callbacks, against Postfix: the
    sts.test domains of the peers publish _mta-sts TXT records (callback:
    id cb1, MX mx-valid; plain: id p1, MX mx-plain, no STARTTLS), and the
    policies come from sts_fetch, so no HTTPS server is needed."""

    def setUp(self):
        _need_peers(self)

    def test_enforce_fetch_cache_store_reload(self):
        calls, stored = [], {}
        dom = "callback.sts.test"
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        path = Path(tmp.name) / "sts-cache"
        with _peers_context(sts_fetch=_fetcher(_policy("enforce", ["mx-valid.tm.test"]), calls),
                            sts_store=stored.__setitem__) as c:
            local = _local("stsenforce")
            st = c.deliver("sender@tm.test", local + "@" + dom, BODY)
            self.assertTrue(st.delivered, st)
            self.assertEqual((st.mta_sts, st.mta_sts_id, st.mta_sts_cached,
                              st.mta_sts_would_refuse, st.mta_sts_error),
                             ("enforce", "cb1", False, False, ""))
            self.assertTrue(st.tls and st.cert_verified)
            self.assertEqual(st.mx_host, "mx-valid.tm.test")
            self.assertEqual(calls, [(dom, "https://mta-sts.%s/.well-known/mta-sts.txt" % dom)])
            _wait_mail(dom, local)
            # sts_store got the entry, as the cache lists it.
            self.assertEqual(list(stored), [dom])
            self.assertRegex(stored[dom], r"^policy callback\.sts\.test cb1 \d+ \d+ \d+ "
                                          r"enforce 86400 mx-valid\.tm\.test$")
            self.assertIn(stored[dom] + "\n", c.sts_cache_list())
            # The TXT id is unchanged: the cached policy, no second fetch.
            local = _local("stscached")
            st = c.deliver("sender@tm.test", local + "@" + dom, BODY)
            self.assertTrue(st.delivered, st)
            self.assertEqual((st.mta_sts, st.mta_sts_id, st.mta_sts_cached),
                             ("enforce", "cb1", True))
            self.assertEqual(len(calls), 1)
            _wait_mail(dom, local)
            c.sts_cache_save(path)
        # After a "restart": the saved file, and a fetcher that has nothing.
        nothing = []
        with _peers_context(sts_fetch=_fetcher(None, nothing)) as c:
            c.sts_cache_load(path)
            st = c.deliver("sender@tm.test", _local("stsfile") + "@" + dom, BODY)
            self.assertTrue(st.delivered, st)
            self.assertEqual((st.mta_sts, st.mta_sts_id, st.mta_sts_cached),
                             ("enforce", "cb1", True))
            self.assertEqual(nothing, [])
        # The same from the host's store (sts_lookup) instead of the file.
        with _peers_context(sts_fetch=_fetcher(None, nothing), sts_lookup=stored.get) as c:
            st = c.deliver("sender@tm.test", _local("stslookup") + "@" + dom, BODY)
            self.assertTrue(st.delivered, st)
            self.assertEqual((st.mta_sts, st.mta_sts_cached), ("enforce", True))
            self.assertEqual(nothing, [])
            self.assertIsNone(c.sts_callback_error)

    def test_enforce_no_matching_mx_defers(self):
        local = _local("stsnomatch")
        with _peers_context(sts_fetch=_fetcher(_policy("enforce", ["*.elsewhere.example"]))) as c:
            # Not even a message policy that asks for less gets through.
            st = c.deliver("sender@tm.test", local + "@callback.sts.test", BODY,
                           policy=tlsmail.Policy(require_tls=False, skip_verify=True))
        self.assertEqual(st.result, tlsmail.Result.DEFERRED, st)
        self.assertEqual(st.error, tlsmail.ErrorCode.ETLSREQUIRED)
        self.assertEqual(st.mta_sts, "enforce")
        self.assertIn("matches no mx pattern", st.mta_sts_error)
        self.assertEqual(st.as_dict()["mta-sts"], "enforce")
        time.sleep(0.2)
        self.assertEqual(_mail_count("callback.sts.test", local), 0)

    def test_enforce_never_plaintext(self):
        local = _local("stsplain")
        with _peers_context(sts_fetch=_fetcher(_policy("enforce", ["mx-plain.tm.test"]))) as c:
            st = c.deliver("sender@tm.test", local + "@plain.sts.test", BODY)
        self.assertEqual(st.result, tlsmail.Result.DEFERRED, st)
        self.assertEqual(st.error, tlsmail.ErrorCode.ETLSREQUIRED)
        self.assertEqual((st.mta_sts, st.mta_sts_id, st.tls), ("enforce", "p1", False))
        self.assertTrue(st.mta_sts_error)
        time.sleep(0.2)
        self.assertEqual(_mail_count("plain.sts.test", local), 0)

    def test_testing_reports_what_enforce_would_refuse(self):
        local = _local("ststesting")
        with _peers_context(sts_fetch=_fetcher(_policy("testing", ["mx-plain.tm.test"]))) as c:
            st = c.deliver("sender@tm.test", local + "@plain.sts.test", BODY)
        self.assertTrue(st.delivered, st)
        self.assertFalse(st.tls)
        self.assertEqual((st.mta_sts, st.mta_sts_id, st.mta_sts_would_refuse),
                         ("testing", "p1", True))
        self.assertIn("no TLS", st.mta_sts_error)
        self.assertIs(st.as_dict()["mta-sts-would-refuse"], True)
        _wait_mail("plain.sts.test", local)

    def test_mode_none_and_fetch_failed(self):
        local = _local("stsmodenone")
        with _peers_context(sts_fetch=_fetcher(_policy("none"))) as c:
            st = c.deliver("sender@tm.test", local + "@callback.sts.test", BODY)
        self.assertTrue(st.delivered, st)
        self.assertEqual((st.mta_sts, st.mta_sts_id), ("none", "cb1"))
        _wait_mail("callback.sts.test", local)

        class Down(Exception):
            pass

        def fetch(domain, url):
            raise Down("proxy down")

        for fetcher in (_fetcher(None), _fetcher(b"not a policy"), fetch):
            local = _local("stsfailed")
            with _peers_context(sts_fetch=fetcher) as c:
                st = c.deliver("sender@tm.test", local + "@callback.sts.test", BODY)
                err = c.sts_callback_error
            self.assertTrue(st.delivered, st)
            self.assertEqual(st.mta_sts, "fetch-failed")
            self.assertTrue(st.mta_sts_error)
            self.assertEqual(st.as_dict()["mta-sts"], "fetch-failed")
            if fetcher is fetch:
                self.assertIsInstance(err, Down)
            else:
                self.assertIsNone(err)
            _wait_mail("callback.sts.test", local)


class Delivery(unittest.TestCase):
    ctx = None

    def setUp(self):
        _need_peers(self)
        if Delivery.ctx is None:
            Delivery.ctx = tlsmail.Context(
                ca_file=os.environ["TM_TEST_CA"], dns_server=os.environ["TM_TEST_DNS"],
                port=int(os.environ["TM_TEST_PORT"]), helo_name="client.tm.test",
                command_timeout_ms=10000)

    @classmethod
    def tearDownClass(cls):
        if cls.ctx is not None:
            cls.ctx.close()
            cls.ctx = None

    def test_deliver_verified_tls(self):
        local = _local("valid")
        st = tlsmail.deliver("sender@tm.test", local + "@valid.tm.test", BODY, context=self.ctx)
        self.assertTrue(st.delivered, st)
        self.assertEqual(st.error, 0)
        self.assertTrue(st.tls)
        self.assertTrue(st.cert_verified)
        self.assertEqual(st.mx_host, "mx-valid.tm.test")
        self.assertEqual(st.code // 100, 2)
        self.assertTrue(st.tls_version)
        self.assertEqual(len(st.recipients), 1)
        self.assertEqual((st.rcpt_count, st.rcpt_delivered, st.transactions), (1, 1, 1))
        d = st.as_dict()
        self.assertEqual(d["recipients"][0]["result"], "delivered")
        self.assertEqual(d["result"], "delivered")
        self.assertIs(d["certificate-verified"], True)
        self.assertEqual(d["mx-host"], "mx-valid.tm.test")
        self.assertIn(b"Hello from Python.", _wait_mail("valid.tm.test", local))

    def test_dane_off_by_default(self):
        # No trusted DNSSEC resolver: DANE off, PKIX verified the server.
        local = _local("daneoff")
        st = self.ctx.deliver("sender@tm.test", local + "@valid.tm.test", BODY)
        self.assertTrue(st.delivered, st)
        self.assertEqual((st.dane, st.mx_dnssec, st.cert_verified_by, st.dane_tlsa),
                         ("off", False, "pkix", ""))
        d = st.as_dict()
        self.assertEqual((d["dane"], d["mx-dnssec"], d["certificate-verified-by"],
                          d["dane-tlsa"]), ("off", False, "pkix", ""))
        _wait_mail("valid.tm.test", local)

    def test_dane_unsigned_zone_is_insecure(self):
        # dnsmasq trusted as a validating resolver: it signs nothing and sets
        # no AD bit, so every answer is insecure and the normal policy applies.
        local = _local("daneinsecure")
        with _peers_context(dnssec_trust_resolver=True) as c:
            st = c.deliver("sender@tm.test", local + "@valid.tm.test", BODY)
        self.assertTrue(st.delivered, st)
        self.assertEqual((st.dane, st.mx_dnssec, st.cert_verified_by),
                         ("insecure", False, "pkix"))
        _wait_mail("valid.tm.test", local)

    def test_floor_dane_without_dane_defers(self):
        # Floor dane with DANE off: nothing is delivered, never plaintext.
        local = _local("danefloor")
        with _peers_context() as c:
            c.set_recipient_floor("valid.tm.test", "dane")
            st = c.deliver("sender@tm.test", local + "@valid.tm.test", BODY)
        self.assertEqual(st.result, tlsmail.Result.DEFERRED, st)
        self.assertEqual(st.floor, tlsmail.Floor.DANE)
        self.assertEqual(st.as_dict()["policy"]["recipient-floor"], "dane")
        time.sleep(0.2)
        self.assertEqual(_mail_count("valid.tm.test", local), 0)

    def test_mta_sts_without_policy(self):
        # dnsmasq serves no _mta-sts TXT records: no policy, delivered as
        # before; an explicit host and a context with MTA-STS off: "off".
        local = _local("stsnone")
        st = self.ctx.deliver("sender@tm.test", local + "@valid.tm.test", BODY)
        self.assertTrue(st.delivered, st)
        self.assertEqual((st.mta_sts, st.mta_sts_id, st.mta_sts_cached,
                          st.mta_sts_would_refuse), ("no-policy", "", False, False))
        self.assertEqual(st.as_dict()["mta-sts"], "no-policy")
        _wait_mail("valid.tm.test", local)
        local = _local("stshost")
        st = self.ctx.deliver("sender@tm.test", local + "@valid.tm.test", BODY,
                              host=os.environ["TM_TEST_MX_VALID"])
        self.assertTrue(st.delivered, st)
        self.assertEqual(st.mta_sts, "off")
        _wait_mail("valid.tm.test", local)
        local = _local("stsoff")
        fetched = []
        with _peers_context(mta_sts=False, sts_fetch=lambda d, u: fetched.append(d)) as c:
            st = c.deliver("sender@tm.test", local + "@valid.tm.test", BODY)
        self.assertTrue(st.delivered, st)
        self.assertEqual((st.mta_sts, st.mta_sts_error), ("off", ""))
        self.assertEqual(fetched, [])
        _wait_mail("valid.tm.test", local)

    def test_plain_opportunistic(self):
        local = _local("plain")
        st = self.ctx.deliver("sender@tm.test", local + "@plain.tm.test", BODY)
        self.assertTrue(st.delivered, st)
        self.assertFalse(st.tls)
        self.assertEqual(st.tls_failure, tlsmail.TLSFailure.NOT_OFFERED)
        _wait_mail("plain.tm.test", local)

    def test_require_tls_on_plain_is_deferred_not_raised(self):
        local = _local("reqtls")
        st = self.ctx.deliver("sender@tm.test", local + "@plain.tm.test", BODY,
                              policy=tlsmail.Policy(require_tls=True))
        self.assertEqual(st.result, tlsmail.Result.DEFERRED)
        self.assertEqual(st.error, tlsmail.ErrorCode.ETLSREQUIRED)
        self.assertTrue(st.policy.require_tls)
        self.assertEqual(st.require_tls_source, tlsmail.PolicySource.MESSAGE)
        time.sleep(0.2)
        self.assertEqual(_mail_count("plain.tm.test", local), 0)

    def test_require_tls_fails_over(self):
        local = _local("plainfirst")
        st = self.ctx.deliver("sender@tm.test", local + "@plainfirst.tm.test", BODY,
                              policy=tlsmail.Policy(require_tls=True))
        self.assertTrue(st.delivered, st)
        self.assertEqual(st.mx_host, "mx-valid.tm.test")
        self.assertTrue(st.tls and st.cert_verified)

    def test_skip_verify_host(self):
        local = _local("selfsigned")
        st = self.ctx.deliver("sender@tm.test", local + "@valid.tm.test", BODY,
                              host=os.environ["TM_TEST_MX_SELFSIGNED"],
                              policy=tlsmail.Policy(require_tls=True, skip_verify=True))
        self.assertTrue(st.delivered, st)
        self.assertTrue(st.tls)
        self.assertFalse(st.cert_verified)
        self.assertEqual(st.mx_host, os.environ["TM_TEST_MX_SELFSIGNED"])

    def test_sending_domain_setting(self):
        self.ctx.set_domain_policy("strict.example", tlsmail.Policy(require_tls=True))
        try:
            st = self.ctx.deliver("news@strict.example", _local("sd") + "@plain.tm.test", BODY)
            self.assertEqual(st.result, tlsmail.Result.DEFERRED)
            self.assertEqual(st.require_tls_source, tlsmail.PolicySource.SENDING_DOMAIN)
            st = self.ctx.deliver("news@strict.example", _local("sd") + "@plain.tm.test", BODY,
                                  policy=tlsmail.Policy(require_tls=False))
            self.assertTrue(st.delivered, st)
            self.assertEqual(st.require_tls_source, tlsmail.PolicySource.MESSAGE)
        finally:
            self.ctx.delete_domain_policy("strict.example")

    def test_bounced_deferred_partial(self):
        st = self.ctx.deliver("sender@tm.test", "reject-me@valid.tm.test", BODY)
        self.assertEqual(st.result, tlsmail.Result.BOUNCED)
        self.assertEqual(st.recipients[0].code, 550)
        st = self.ctx.deliver("sender@tm.test", "defer-me@valid.tm.test", BODY)
        self.assertEqual(st.result, tlsmail.Result.DEFERRED)
        ok = _local("partial")
        st = self.ctx.deliver("sender@tm.test",
                              [ok + "@valid.tm.test", "reject-x@valid.tm.test"], BODY)
        self.assertEqual(st.error, tlsmail.ErrorCode.EPARTIAL)
        self.assertFalse(st.delivered)
        self.assertEqual([r.result for r in st.recipients],
                         [tlsmail.Result.DELIVERED, tlsmail.Result.BOUNCED])
        self.assertEqual((st.rcpt_count, st.rcpt_delivered, st.rcpt_bounced), (2, 1, 1))
        _wait_mail("valid.tm.test", ok)

    def test_more_recipients_than_one_transaction(self):
        # 0.1 capped a message at 50 recipients; the library now sends at
        # most 100 per transaction and the rest in further transactions.
        locals_ = [_local("many%03d" % i) for i in range(105)]
        st = self.ctx.deliver("sender@tm.test", [l + "@valid.tm.test" for l in locals_], BODY)
        self.assertTrue(st.delivered, st)
        self.assertEqual(len(st.recipients), 105)
        self.assertEqual([r.address for r in st.recipients],
                         [l + "@valid.tm.test" for l in locals_])
        self.assertTrue(all(r.delivered for r in st.recipients))
        self.assertEqual((st.rcpt_count, st.rcpt_delivered), (105, 105))
        self.assertGreaterEqual(st.transactions, 2)
        self.assertEqual(len(st.as_dict()["recipients"]), 105)
        for local in (locals_[0], locals_[-1]):
            _wait_mail("valid.tm.test", local)

    def test_domains_without_mail(self):
        st = self.ctx.deliver("sender@tm.test", "x@nullmx.tm.test", BODY)
        self.assertEqual((st.result, st.error),
                         (tlsmail.Result.BOUNCED, tlsmail.ErrorCode.ENULLMX))
        st = self.ctx.deliver("sender@tm.test", "x@nosuch.tm.test", BODY)
        self.assertEqual((st.result, st.error),
                         (tlsmail.Result.BOUNCED, tlsmail.ErrorCode.ENODOMAIN))

    def test_streamed_file(self):
        local = _local("stream")
        big = b"Subject: streamed\r\n\r\n" + b"".join(
            b"line %06d .dot\n" % i for i in range(20000)) + b".leading dot\n"
        st = self.ctx.deliver("sender@tm.test", local + "@valid.tm.test", io.BytesIO(big))
        self.assertTrue(st.delivered, st)
        got = _wait_mail("valid.tm.test", local)
        self.assertIn(b"line 019999 .dot", got)
        self.assertIn(b"\n.leading dot", got)

    def test_streamed_plain_read(self):
        class OnlyRead:
            def __init__(self, data):
                self.f = io.BytesIO(data)

            def read(self, n):
                return self.f.read(min(n, 7))

        local = _local("read")
        st = self.ctx.deliver("sender@tm.test", local + "@valid.tm.test", OnlyRead(BODY))
        self.assertTrue(st.delivered, st)
        self.assertIn(b"Hello from Python.", _wait_mail("valid.tm.test", local))

    def test_reader_exception_fails_delivery(self):
        class Broken(io.RawIOBase):
            def __init__(self):
                self.n = 0

            def readable(self):
                return True

            def readinto(self, b):
                self.n += 1
                if self.n > 2:
                    raise OSError("disk on fire")
                b[:9] = b"x: y\r\n\r\nz"[:len(b)]
                return 9

        local = _local("broken")
        with self.assertRaises(tlsmail.MessageReadError) as cm:
            self.ctx.deliver("sender@tm.test", local + "@valid.tm.test", Broken())
        self.assertIsInstance(cm.exception.__cause__, OSError)
        self.assertNotEqual(cm.exception.status.result, tlsmail.Result.DELIVERED)
        time.sleep(0.3)
        self.assertEqual(_mail_count("valid.tm.test", local), 0)

    def test_session_many_messages(self):
        locals_ = [_local("sess%d" % i) for i in range(5)]
        with tlsmail.Session(self.ctx, "valid.tm.test") as s:
            self.assertEqual(s.open_status.mx_host, "mx-valid.tm.test")
            tls = s.starttls(tlsmail.Policy(require_tls=True))
            self.assertTrue(tls.tls and tls.cert_verified)
            for i, local in enumerate(locals_):
                st = s.send("sender@tm.test", local + "@valid.tm.test",
                            b"Subject: session %d\r\n\r\nmessage %d\r\n" % (i, i))
                self.assertTrue(st.delivered, st)
                self.assertTrue(st.tls)
            st = s.send("sender@tm.test", "reject-s@valid.tm.test", BODY)
            self.assertEqual(st.result, tlsmail.Result.BOUNCED)
            st = s.send("sender@tm.test", _local("after") + "@valid.tm.test", BODY)
            self.assertTrue(st.delivered, st)  # still usable after a refusal
        self.assertTrue(s.closed)
        with self.assertRaises(tlsmail.SessionStateError):
            s.send("sender@tm.test", "x@valid.tm.test", BODY)
        for i, local in enumerate(locals_):
            self.assertIn(b"message %d" % i, _wait_mail("valid.tm.test", local))

    def test_session_tls_required_raises(self):
        with tlsmail.Session(self.ctx, "plain.tm.test") as s:
            with self.assertRaises(tlsmail.TLSRequired) as cm:
                s.starttls(tlsmail.Policy(require_tls=True))
            self.assertEqual(cm.exception.status.result, tlsmail.Result.DEFERRED)
            with self.assertRaises(tlsmail.SessionStateError):
                s.send("sender@tm.test", "x@plain.tm.test", BODY)

    def test_session_open_failure_raises(self):
        with self.assertRaises(tlsmail.DeliveryError) as cm:
            tlsmail.Session(self.ctx, "nullmx.tm.test")
        self.assertEqual(cm.exception.code, tlsmail.ErrorCode.ENULLMX)
        self.assertEqual(cm.exception.status.result, tlsmail.Result.BOUNCED)

    def test_context_close_refused_while_session_open(self):
        c = tlsmail.Context(ca_file=os.environ["TM_TEST_CA"],
                            dns_server=os.environ["TM_TEST_DNS"],
                            port=int(os.environ["TM_TEST_PORT"]), helo_name="client.tm.test",
                            timeout=10)
        s = c.session("valid.tm.test")
        with self.assertRaises(tlsmail.SessionStateError):
            c.close()
        s.close()
        c.close()
        self.assertTrue(c.closed)

    def test_log_callback(self):
        lines = []
        c = tlsmail.Context(ca_file=os.environ["TM_TEST_CA"],
                            dns_server=os.environ["TM_TEST_DNS"],
                            port=int(os.environ["TM_TEST_PORT"]), helo_name="client.tm.test",
                            timeout=10, log=lambda lvl, m: lines.append((lvl, m)),
                            log_level=tlsmail.LogLevel.DEBUG)
        with c:
            st = c.deliver("sender@tm.test", _local("log") + "@valid.tm.test", BODY)
        self.assertTrue(st.delivered, st)
        self.assertTrue(any("EHLO" in m or "ehlo" in m.lower() for _, m in lines), lines[:5])

    def test_ca_path_directory(self):
        # ca_path alone: a directory holding a copy of the test CA.
        with tempfile.TemporaryDirectory() as d:
            (Path(d) / "tlsmail-test-ca.pem").write_bytes(
                Path(os.environ["TM_TEST_CA"]).read_bytes())
            (Path(d) / "README").write_text("not a certificate: skipped\n")
            with _peers_context(ca_path=Path(d)) as c:
                local = _local("capath")
                st = c.deliver("sender@tm.test", local + "@valid.tm.test", BODY,
                               policy=tlsmail.Policy(require_tls=True))
        self.assertTrue(st.delivered, st)
        self.assertTrue(st.tls)
        self.assertTrue(st.cert_verified)
        self.assertEqual(st.tls_failure, tlsmail.TLSFailure.NONE)
        self.assertEqual(st.mx_host, "mx-valid.tm.test")
        self.assertIn(b"Hello from Python.", _wait_mail("valid.tm.test", local))

    def test_second_delivery_resumes(self):
        # Two deliveries with one (fresh) context to the same host: a
        # full handshake, then a resumed session, verified both times.
        with _peers_context() as c:
            locals_ = [_local("resume%d" % i) for i in range(2)]
            first, second = [c.deliver("sender@tm.test", l + "@valid.tm.test", BODY)
                             for l in locals_]
        for st in (first, second):
            self.assertTrue(st.delivered, st)
            self.assertTrue(st.tls and st.cert_verified, st)
            self.assertEqual(st.mx_host, "mx-valid.tm.test")
        self.assertIs(first.tls_resumed, False)
        self.assertIs(second.tls_resumed, True)
        self.assertEqual(second.tls_version, first.tls_version)
        self.assertIs(first.as_dict()["tls-resumed"], False)
        self.assertIs(second.as_dict()["tls-resumed"], True)
        for local in locals_:
            _wait_mail("valid.tm.test", local)

    def test_reload_ca(self):
        # ca_file a copy of the test CA: verified; reloaded, verified
        # again (and not resumed: the reload forgot the sessions the old
        # store verified); replaced by a file with no certificate, the
        # reload raises CAFileError and the test CA stays in use.
        with tempfile.TemporaryDirectory() as d:
            ca = Path(d) / "ca.pem"
            _replace_file(ca, Path(os.environ["TM_TEST_CA"]).read_bytes())
            with _peers_context(ca_file=ca) as c:
                st = c.deliver("sender@tm.test", _local("reload0") + "@valid.tm.test", BODY)
                self.assertTrue(st.delivered and st.tls and st.cert_verified, st)
                c.reload_ca()
                st = c.deliver("sender@tm.test", _local("reload1") + "@valid.tm.test", BODY)
                self.assertTrue(st.delivered and st.tls and st.cert_verified, st)
                self.assertIs(st.tls_resumed, False)

                _replace_file(ca, b"no certificate here\n")
                with self.assertRaises(tlsmail.CAFileError) as cm:
                    c.reload_ca()
                self.assertEqual(cm.exception.code, tlsmail.ErrorCode.ECAFILE)
                self.assertEqual(cm.exception.name, "ECAFILE")
                local = _local("reloadfail")
                st = c.deliver("sender@tm.test", local + "@valid.tm.test", BODY,
                               policy=tlsmail.Policy(require_tls=True))
                self.assertTrue(st.delivered, st)
                self.assertTrue(st.tls and st.cert_verified, st)
                _wait_mail("valid.tm.test", local)
                ca.unlink()  # no file at all: the same
                with self.assertRaises(tlsmail.CAFileError):
                    c.reload_ca()
                st = c.deliver("sender@tm.test", _local("reloadgone") + "@valid.tm.test", BODY,
                               policy=tlsmail.Policy(require_tls=True))
                self.assertTrue(st.delivered and st.tls and st.cert_verified, st)

    def test_reload_ca_during_deliveries(self):
        # reload_ca() on one thread while others deliver with the context:
        # every delivery verified, the context closes cleanly afterwards.
        c = _peers_context()
        results, errors = [], []
        locals_ = [_local("relthr%d" % i) for i in range(6)]

        def worker(local):
            try:
                for i in range(2):
                    results.append(c.deliver("sender@tm.test", "%s%d@valid.tm.test" % (local, i),
                                             BODY, policy=tlsmail.Policy(require_tls=True)))
            except BaseException as e:  # noqa: B902 - reported below
                errors.append(e)

        threads = [threading.Thread(target=worker, args=(l,)) for l in locals_]
        for t in threads:
            t.start()
        for _ in range(5):
            c.reload_ca()
            time.sleep(0.02)
        for t in threads:
            t.join()
        c.close()
        self.assertTrue(c.closed)
        self.assertEqual(errors, [])
        self.assertEqual(len(results), 12)
        self.assertTrue(all(r.delivered and r.tls and r.cert_verified for r in results), results)

    def test_threads_share_context(self):
        results = []
        locals_ = [_local("thr%d" % i) for i in range(8)]

        def worker(local):
            results.append(self.ctx.deliver("sender@tm.test", local + "@valid.tm.test", BODY))

        threads = [threading.Thread(target=worker, args=(l,)) for l in locals_]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(len(results), 8)
        self.assertTrue(all(r.delivered and r.cert_verified for r in results), results)
        for local in locals_:
            _wait_mail("valid.tm.test", local)


if __name__ == "__main__":
    unittest.main()
