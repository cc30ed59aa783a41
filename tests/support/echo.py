#!/usr/bin/env python3
"""Kernel-TCP peer for the interop tests, run inside a network namespace.

  echo.py serve PORT                  dual-stack echo server (one thread per connection)
  echo.py client HOST PORT NBYTES     send NBYTES of a fixed pattern, read the echo,
                                      exit 0 if every byte came back intact
  echo.py sink PORT                   per connection: read to the end, answer the count
  echo.py source PORT                 per connection: read a line "COUNT [CC]", send that
                                      many bytes with congestion control CC (the system's
                                      default without it), close
  echo.py send HOST PORT NBYTES CC    send NBYTES to a sink with congestion control CC, print
                                      the sink's count
"""
import hashlib
import socket
import sys
import threading


def pattern(n):
    out = bytearray()
    block = hashlib.sha256(b"agentwire").digest()
    while len(out) < n:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:n])


def echo(c):
    with c:
        while True:
            b = c.recv(1 << 16)
            if not b:
                c.shutdown(socket.SHUT_WR)
                return
            c.sendall(b)


def listen(port, handle):
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind(("::", port))
    s.listen(64)
    print("ready", flush=True)
    while True:
        c, _ = s.accept()
        threading.Thread(target=handle, args=(c,), daemon=True).start()


def sink(c):
    with c:
        n = 0
        while True:
            b = c.recv(1 << 18)
            if not b:
                break
            n += len(b)
        c.sendall(f"{n}\n".encode())


def source(c):
    with c:
        line = b""
        while not line.endswith(b"\n"):
            b = c.recv(64)
            if not b:
                return
            line += b
        words = line.split()
        n = int(words[0])
        if len(words) > 1:
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, words[1])
        chunk = b"\x5a" * (1 << 18)
        while n > 0:
            k = min(n, len(chunk))
            c.sendall(chunk[:k])
            n -= k


def send(host, port, n, cc):
    c = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, cc.encode())
    c.settimeout(120)
    c.connect((host, port))
    chunk = b"\x5a" * (1 << 18)
    while n > 0:
        k = min(n, len(chunk))
        c.sendall(chunk[:k])
        n -= k
    c.shutdown(socket.SHUT_WR)
    reply = b""
    while True:
        b = c.recv(64)
        if not b:
            break
        reply += b
    print(reply.decode().strip(), flush=True)


def client(host, port, n):
    data = pattern(n)
    c = socket.create_connection((host, port), timeout=30)
    got = bytearray()

    def reader():
        while True:
            b = c.recv(1 << 16)
            if not b:
                return
            got.extend(b)

    t = threading.Thread(target=reader)
    t.start()
    c.sendall(data)
    c.shutdown(socket.SHUT_WR)
    t.join(60)
    ok = bytes(got) == data
    print(f"sent={len(data)} received={len(got)} sha256={hashlib.sha256(bytes(got)).hexdigest()} ok={ok}", flush=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        listen(int(sys.argv[2]), echo)
    elif sys.argv[1] == "sink":
        listen(int(sys.argv[2]), sink)
    elif sys.argv[1] == "source":
        listen(int(sys.argv[2]), source)
    elif sys.argv[1] == "send":
        send(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
    else:
        client(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
