"""deliver_async() and the exceptions by result (Deferred, Bounced,
Uncertain, TLSRequired).  No peers and no network: the deliveries go to a
listening socket on loopback that never greets, or to a closed port.

    TLSMAIL_LIBRARY=build/libtlsmail.so.1 PYTHONPATH=bindings/python \\
        /usr/bin/python3 -m unittest discover -s bindings/python/tests -p 'test_async.py' -v
"""

import asyncio
import socket
import threading
import time
import unittest

import tlsmail
from tlsmail import ErrorCode, Result

BODY = b"Subject: async\r\n\r\nHello.\r\n"


def silent_listener():
    """A socket on 127.0.0.1 that accepts connections (the kernel's backlog)
    and never says a word."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    s.listen(4)
    return s


def closed_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def quick_context():
    return tlsmail.Context(mta_sts=False, helo_name="client.tm.test",
                           connect_timeout_ms=1000, greeting_timeout_ms=700,
                           delivery_timeout_ms=3000)


class Hierarchy(unittest.TestCase):
    def test_classes(self):
        for cls in (tlsmail.Deferred, tlsmail.Bounced, tlsmail.Uncertain):
            self.assertTrue(issubclass(cls, tlsmail.DeliveryError))
            self.assertTrue(issubclass(cls, tlsmail.TlsmailError))
        # TLS required but unavailable is deferred (docs/guide.md); older
        # code catching DeliveryError still catches it.
        self.assertTrue(issubclass(tlsmail.TLSRequired, tlsmail.Deferred))
        self.assertTrue(issubclass(tlsmail.TLSRequired, tlsmail.DeliveryError))
        for name in ("Deferred", "Bounced", "Uncertain", "TLSRequired", "deliver_async"):
            self.assertIn(name, tlsmail.__all__)

    def test_bindings_use_cdll(self):
        # ctypes releases the GIL around calls through a CDLL, not a PyDLL:
        # what lets deliver_async's executor thread run beside the loop.
        self.assertIs(type(tlsmail._ffi.lib), __import__("ctypes").CDLL)


class RaiseForResult(unittest.TestCase):
    def test_delivered_returns_the_status(self):
        st = tlsmail.DeliveryStatus(result=Result.DELIVERED)
        self.assertIs(st.raise_for_result(), st)

    def test_each_result_has_its_class(self):
        table = [
            (Result.DEFERRED, ErrorCode.ETIMEOUT, tlsmail.Deferred),
            (Result.DEFERRED, ErrorCode.ETLSREQUIRED, tlsmail.TLSRequired),
            (Result.BOUNCED, ErrorCode.EREJECTED, tlsmail.Bounced),
            (Result.BOUNCED, ErrorCode.ENULLMX, tlsmail.Bounced),
            (Result.UNCERTAIN, ErrorCode.EUNCERTAIN, tlsmail.Uncertain),
            (Result.BOUNCED, ErrorCode.EPARTIAL, tlsmail.Bounced),
            (Result.NONE, ErrorCode.EIO, tlsmail.DeliveryError),
        ]
        for result, error, cls in table:
            with self.subTest(result=result, error=error):
                st = tlsmail.DeliveryStatus(result=result, error=int(error))
                with self.assertRaises(cls) as cm:
                    st.raise_for_result()
                self.assertIs(type(cm.exception), cls)
                self.assertIs(cm.exception.status, st)
                self.assertEqual(cm.exception.code, int(error))
                self.assertEqual(cm.exception.name, error.name)


class DeliverCheck(unittest.TestCase):
    def test_refused_connection_is_deferred(self):
        ctx = quick_context()
        try:
            port = closed_port()
            st = tlsmail.deliver("a@tm.test", "b@tm.test", BODY, host="127.0.0.1",
                                 port=port, context=ctx)
            self.assertEqual(st.result, Result.DEFERRED)
            with self.assertRaises(tlsmail.Deferred) as cm:
                tlsmail.deliver("a@tm.test", "b@tm.test", BODY, host="127.0.0.1",
                                port=port, context=ctx, check=True)
            self.assertEqual(cm.exception.status.result, Result.DEFERRED)
            self.assertNotIsInstance(cm.exception, tlsmail.TLSRequired)
        finally:
            ctx.close()

    def test_session_open_failure_is_deferred(self):
        ctx = quick_context()
        try:
            with self.assertRaises(tlsmail.Deferred):
                tlsmail.Session(ctx, "tm.test", host="127.0.0.1", port=closed_port())
        finally:
            ctx.close()


class DeliverAsync(unittest.TestCase):
    def test_invalid_argument_is_raised_through_the_executor(self):
        async def main():
            with self.assertRaises(tlsmail.InvalidArgument):
                await tlsmail.deliver_async("a@tm.test", [], BODY)
        asyncio.run(main())

    def test_loop_runs_while_the_delivery_blocks(self):
        # The delivery waits ~0.7 s for a greeting that never comes; the
        # event loop must keep ticking meanwhile (executor + GIL released).
        ctx = quick_context()
        srv = silent_listener()
        try:
            port = srv.getsockname()[1]
            ticks = []
            threads = []

            async def ticker(stop):
                while not stop.is_set():
                    ticks.append(time.monotonic())
                    await asyncio.sleep(0.02)

            async def main():
                stop = asyncio.Event()
                t = asyncio.create_task(ticker(stop))
                t0 = time.monotonic()
                st = await tlsmail.deliver_async("a@tm.test", "b@tm.test", BODY,
                                                 host="127.0.0.1", port=port, context=ctx)
                threads.append(threading.get_ident())
                stop.set()
                await t
                return st, time.monotonic() - t0

            st, took = asyncio.run(main())
            self.assertEqual(st.result, Result.DEFERRED)
            self.assertGreaterEqual(took, 0.5)
            # ~35 ticks in 0.7 s; far fewer would mean the loop was blocked.
            self.assertGreater(len(ticks), 10)
        finally:
            srv.close()
            ctx.close()

    def test_check_raises_deferred(self):
        ctx = quick_context()
        try:
            async def main():
                return await tlsmail.deliver_async("a@tm.test", "b@tm.test", BODY,
                                                   host="127.0.0.1", port=closed_port(),
                                                   context=ctx, check=True)
            with self.assertRaises(tlsmail.Deferred):
                asyncio.run(main())
        finally:
            ctx.close()

    def test_many_at_once_on_one_context(self):
        ctx = quick_context()
        try:
            async def main():
                port = closed_port()
                return await asyncio.gather(*[
                    tlsmail.deliver_async("a@tm.test", "b%d@tm.test" % i, BODY,
                                          host="127.0.0.1", port=port, context=ctx)
                    for i in range(8)])
            for st in asyncio.run(main()):
                self.assertEqual(st.result, Result.DEFERRED)
        finally:
            ctx.close()


if __name__ == "__main__":
    unittest.main()
