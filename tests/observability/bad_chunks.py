#!/usr/bin/env python3
"""Pushes chunks a learner must reject, over plain gRPC (HTTP/2 without TLS).

    python3 tests/observability/bad_chunks.py HOST:PORT

Sends two PushChunk calls that no real actor would send:
  - an empty Chunk (protocol version 0): rejected as `protocol_version`;
  - a Chunk of the current protocol from an actor id that never registered:
    rejected as `unknown_actor`.
Each shows up in the learner's volley_chunks_rejected_total{reason=...}. Standard
library only: a minimal HTTP/2 client (literal HPACK headers, no Huffman) and a
hand-written protobuf encoding of the two Chunk fields it sets. It does not decode
the answers (the caller reads the learner's counters); it exits 1 if a call got no
answer.
"""

import socket
import struct
import sys

PROTOCOL_VERSION = 1  # volley_proto::PROTOCOL_VERSION
PATH = "/volley.v1.Volley/PushChunk"

DATA, HEADERS, SETTINGS, PING, GOAWAY, RST_STREAM = 0x0, 0x1, 0x4, 0x6, 0x7, 0x3
END_STREAM, END_HEADERS, ACK = 0x1, 0x4, 0x1


def frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def hpack_string(s):
    b = s.encode()
    if len(b) >= 127:
        raise ValueError("header too long for this encoder")
    return bytes([len(b)]) + b


def hpack_literal(name, value):
    # Literal header field without indexing, new name (RFC 7541, 6.2.2).
    return b"\x00" + hpack_string(name) + hpack_string(value)


def varint(n):
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def chunk(protocol_version=0, actor_id=""):
    msg = b""
    if protocol_version:
        msg += b"\x08" + varint(protocol_version)  # field 1, varint
    if actor_id:
        b = actor_id.encode()
        msg += b"\x12" + varint(len(b)) + b  # field 2, length-delimited
    return msg


def read_frame(sock):
    head = b""
    while len(head) < 9:
        part = sock.recv(9 - len(head))
        if not part:
            return None
        head += part
    length = int.from_bytes(head[:3], "big")
    kind, flags = head[3], head[4]
    stream = int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
    payload = b""
    while len(payload) < length:
        part = sock.recv(length - len(payload))
        if not part:
            return None
        payload += part
    return kind, flags, stream, payload


def main():
    if len(sys.argv) != 2 or ":" not in sys.argv[1]:
        sys.exit("usage: bad_chunks.py HOST:PORT")
    host, port = sys.argv[1].rsplit(":", 1)
    calls = {
        1: ("protocol_version", chunk()),
        3: ("unknown_actor", chunk(PROTOCOL_VERSION, "observability-probe-never-registered")),
    }
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(SETTINGS, 0, 0))
    for stream, (_, body) in calls.items():
        headers = b"".join(hpack_literal(k, v) for k, v in [
            (":method", "POST"), (":scheme", "http"), (":path", PATH),
            (":authority", f"{host}:{port}"), ("content-type", "application/grpc"),
            ("te", "trailers"),
        ])
        sock.sendall(frame(HEADERS, END_HEADERS, stream, headers))
        sock.sendall(frame(DATA, END_STREAM, stream, b"\x00" + struct.pack(">I", len(body)) + body))
    open_streams = set(calls)
    while open_streams:
        f = read_frame(sock)
        if f is None:
            break
        kind, flags, stream, payload = f
        if kind == SETTINGS and not flags & ACK:
            sock.sendall(frame(SETTINGS, ACK, 0))
        elif kind == PING and not flags & ACK:
            sock.sendall(frame(PING, ACK, 0, payload))
        elif kind == GOAWAY:
            break
        elif stream in open_streams:
            if flags & END_STREAM or kind == RST_STREAM:
                open_streams.discard(stream)
    sock.close()
    for stream, (reason, _) in calls.items():
        answered = "no answer" if stream in open_streams else "answered"
        print(f"bad_chunks: PushChunk expecting rejection '{reason}': {answered}")
    if open_streams:
        sys.exit(1)


if __name__ == "__main__":
    main()
