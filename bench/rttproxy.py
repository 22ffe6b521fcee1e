#!/usr/bin/python3
"""Delay-injecting TCP proxy for counting round trips (see bench/README.md).

    rttproxy.py --listen 127.0.0.2:0 --target 127.0.0.2:PORT --delay-ms 20
                [--max-conns 200] [--lifetime 120]

Listens on a loopback address, prints "PORT <n>" on stdout once listening,
and forwards every accepted connection to --target, adding a fixed one-way
delay D to each direction:

  * the upstream connection is opened D after the accept, so the server's
    greeting reaches the client 2*D after its connect: connection setup plus
    greeting count as one round trip (a real network adds the TCP handshake,
    another 1-1.5 RTT, which this proxy does not model);
  * every chunk read from one side is written to the other side D after it
    was read, in order (one queue and one writer thread per direction), so
    a request/response exchange costs 2*D however the bytes are split;
  * end of stream is forwarded the same way (shutdown after D).

Both sockets have TCP_NODELAY, and TCP_QUICKACK is re-armed after every
read, so the proxy adds no Nagle or delayed-ACK stall of its own (and hides
the client's: stalls are measured without the proxy).  run.py runs each
client through two proxies, D1 and D2, and counts round trips per message as
    (latency at D2 - latency at D1) / (2 * (D2 - D1)),
so the client's and the server's processing time cancel out.

Loopback only; bounded in connections (--max-conns) and time (--lifetime):
it exits by itself.  Standard library only.
"""

import argparse
import queue
import socket
import sys
import threading
import time


def parse_hostport(text):
    host, _, port = text.rpartition(":")
    if not host.startswith("127."):
        raise SystemExit("rttproxy: loopback addresses only (127.0.0.0/8): %s" % text)
    return host, int(port)


def nodelay(s):
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def quickack(s):
    try:
        s.setsockopt(socket.IPPROTO_TCP, getattr(socket, "TCP_QUICKACK", 12), 1)
    except OSError:
        pass


def pump(src, dst, delay, done):
    """Copies src -> dst, each chunk D seconds after it was read."""
    q = queue.Queue()

    def reader():
        while True:
            try:
                data = src.recv(65536)
                if data:
                    quickack(src)
            except OSError:
                data = b""
            q.put((time.monotonic() + delay, data))
            if not data:
                return

    def writer():
        alive = True
        while True:
            due, data = q.get()
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            if not data:
                break
            if alive:
                try:
                    dst.sendall(data)
                except OSError:
                    alive = False  # keep draining the queue until EOF
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        done.release()

    for fn in (reader, writer):
        threading.Thread(target=fn, daemon=True).start()


def serve(client, target, delay):
    time.sleep(delay)
    try:
        up = socket.create_connection(target, timeout=10)
    except OSError:
        client.close()
        return
    up.settimeout(None)
    nodelay(up)
    nodelay(client)
    done = threading.Semaphore(0)
    pump(client, up, delay, done)
    pump(up, client, delay, done)
    done.acquire()
    done.acquire()
    client.close()
    up.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", required=True, help="ADDR:PORT (port 0: any free)")
    ap.add_argument("--target", required=True, help="ADDR:PORT of the server")
    ap.add_argument("--delay-ms", type=float, default=20.0)
    ap.add_argument("--max-conns", type=int, default=200)
    ap.add_argument("--lifetime", type=float, default=120.0, help="seconds")
    a = ap.parse_args()
    listen, target = parse_hostport(a.listen), parse_hostport(a.target)
    delay = a.delay_ms / 1000.0

    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(listen)
    ls.listen(64)
    print("PORT %d" % ls.getsockname()[1], flush=True)
    deadline = time.monotonic() + a.lifetime
    conns = 0
    while conns < a.max_conns:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        ls.settimeout(left)
        try:
            c, _ = ls.accept()
        except socket.timeout:
            break
        conns += 1
        threading.Thread(target=serve, args=(c, target, delay), daemon=True).start()
    ls.close()
    # let the last connections finish, within the lifetime
    end = min(deadline, time.monotonic() + 30)
    while threading.active_count() > 1 and time.monotonic() < end:
        time.sleep(0.05)
    return 0


if __name__ == "__main__":
    sys.exit(main())
