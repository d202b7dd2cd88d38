#!/usr/bin/python3
"""A hostile RTSP camera on plain sockets: each --shape is one way a broken or malicious
server can try to exhaust the client's memory or hang it.

Prints `READY rtsp://127.0.0.1:PORT/cam` on stdout once it listens (like server.py). Serves
every connection the same way, in its own thread, until the client hangs up.

Shapes:
  huge-body        answers DESCRIBE with Content-Length: 99999999999 and an endless body
  endless-headers  answers with a status line and then header lines forever
  endless-line     answers with one header line that never ends
  endless-crlf     sends CRLFs forever (blank lines may precede a message)
  random           sends seeded random bytes forever
  silence          accepts and reads, never answers
  many-tracks      an SDP with --tracks H.264 video tracks (default 1000)
  tracks-max       as many minimal media sections as fit in a message under 1 MiB
  giant-sdp        an honest 64 MiB SDP (Content-Length matches the body)
  flood-data       instead of answering, 64 KiB interleaved frames forever
  endless-frame    a valid session, then one H.264 access unit that never ends (FU-A
                   fragments of one timestamp, without end bit or RTP marker)
  tiny-nals        a valid session, then one access unit of ever more 1-byte NAL units (each
                   packet a whole NAL: the most bookkeeping per byte buffered)
  tiny-fragments   a valid session, then one NAL unit of ever more 1-byte FU-A fragments
  big-frames       not hostile, only large: a valid session, then complete key frames of
                   --frame-bytes each, 5 per second (the sample clip's SPS and PPS in the SDP)
"""

import argparse
import base64
import os
import random
import socket
import itertools
import struct
import sys
import threading
import time

CHUNK = 64 * 1024


def read_request(conn, buf):
    """One request head; returns (method, cseq, rest of buf) or None at EOF."""
    while b"\r\n\r\n" not in buf:
        data = conn.recv(4096)
        if not data:
            return None
        buf += data
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method = lines[0].split(" ", 1)[0]
    cseq = "0"
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "cseq":
            cseq = value.strip()
    return method, cseq, rest


def response(cseq, headers=(), body=b""):
    head = f"RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\n"
    for h in headers:
        head += h + "\r\n"
    if body:
        head += f"Content-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


def sdp(tracks, junk_bytes=0, sprop=""):
    s = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=hostile\r\nt=0 0\r\n"
    if junk_bytes:
        line = "a=x-junk:" + "j" * 1000 + "\r\n"
        s += line * (junk_bytes // len(line))
    for i in range(tracks):
        s += (
            "m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"
            f"a=fmtp:96 packetization-mode=1{sprop}\r\na=control:track{i}\r\n"
        )
    return s.encode()


def sample_sprop():
    """sprop-parameter-sets of the sample clip's first SPS and PPS."""
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
    with open(os.path.join(root, "samples", "sample-h264-640x360-gop1s.h264"), "rb") as f:
        data = f.read(4096)
    nals = {}
    for nal in data.split(b"\x00\x00\x01")[1:]:
        nal = nal.rstrip(b"\x00")
        if nal:
            nals.setdefault(nal[0] & 0x1F, nal)
    sps, pps = nals[7], nals[8]
    b64 = lambda b: base64.b64encode(b).decode()
    return f";profile-level-id={sps[1:4].hex()};sprop-parameter-sets={b64(sps)},{b64(pps)}"


def interleaved(seq, timestamp, payload, marker=False):
    rtp = struct.pack(">BBHII", 0x80, 96 | (0x80 if marker else 0), seq & 0xFFFF, timestamp, 0x1234)
    pkt = rtp + payload
    return b"$\x00" + struct.pack(">H", len(pkt)) + pkt


def forever(conn, chunk):
    while True:
        conn.sendall(chunk)


def play(conn, description):
    """DESCRIBE, SETUP and PLAY answered properly; False if the client left first."""
    buf = b""
    while True:
        req = read_request(conn, buf)
        if req is None:
            return False
        method, cseq, buf = req
        if method == "DESCRIBE":
            conn.sendall(response(cseq, ["Content-Type: application/sdp"], description))
        elif method == "SETUP":
            conn.sendall(
                response(
                    cseq,
                    ["Transport: RTP/AVP/TCP;unicast;interleaved=0-1", "Session: 12345678;timeout=60"],
                )
            )
        elif method == "PLAY":
            conn.sendall(response(cseq, ["Session: 12345678"]))
            return True
        else:
            conn.sendall(response(cseq))


def endless_frame(conn):
    """One access unit forever."""
    if not play(conn, sdp(1)):
        return
    payload = b"\x00" * 60000
    seq = 0
    while True:
        # FU-A of an IDR slice (NRI 3): the start fragment, then middles forever.
        fu_header = 0x85 if seq == 0 else 0x05
        conn.sendall(interleaved(seq, 90000, bytes([0x7C, fu_header]) + payload))
        seq += 1


def tiny_nals(conn):
    """One access unit of 1-byte non-IDR slice NALs forever, 4096 packets per send."""
    if not play(conn, sdp(1)):
        return
    seq = 0
    while True:
        conn.sendall(b"".join(interleaved(seq + i, 90000, b"\x41") for i in range(4096)))
        seq += 4096


def tiny_fragments(conn):
    """One FU-A NAL of 1-byte fragments forever, 4096 packets per send."""
    if not play(conn, sdp(1)):
        return
    seq = 0
    while True:
        conn.sendall(
            b"".join(
                interleaved(seq + i, 90000, bytes([0x7C, 0x85 if seq + i == 0 else 0x05, 0x41]))
                for i in range(4096)
            )
        )
        seq += 4096


def big_frames(conn, frame_bytes):
    """Complete IDR access units of frame_bytes, 5 per second, in FU-A fragments of 60000."""
    if not play(conn, sdp(1, sprop=sample_sprop())):
        return
    body = bytes(range(1, 256)) * (frame_bytes // 255 + 1)
    body = body[: frame_bytes - 1]
    seq = 0
    start = time.monotonic()
    for n in itertools.count():
        # Paced in real time: frame n leaves at n/5 s.
        delay = start + n / 5 - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        chunks = [body[i : i + 60000] for i in range(0, len(body), 60000)]
        for i, chunk in enumerate(chunks):
            first, last = i == 0, i == len(chunks) - 1
            fu_header = 0x05 | (0x80 if first else 0) | (0x40 if last else 0)
            conn.sendall(interleaved(seq, 90000 + n * 18000, bytes([0x7C, fu_header]) + chunk, last))
            seq += 1


def serve(conn, shape, blobs):
    try:
        if shape == "endless-frame":
            return endless_frame(conn)
        if shape == "tiny-nals":
            return tiny_nals(conn)
        if shape == "tiny-fragments":
            return tiny_fragments(conn)
        if shape == "big-frames":
            return big_frames(conn, blobs["frame_bytes"])
        if shape == "random":
            return forever(conn, blobs["random"])
        if shape == "endless-crlf":
            return forever(conn, b"\r\n" * (CHUNK // 2))
        if shape == "flood-data":
            return forever(conn, b"$\x05\xff\xff" + b"\x00" * 0xFFFF)
        req = read_request(conn, b"")
        if req is None:
            return
        _, cseq, _ = req
        if shape == "silence":
            while conn.recv(4096):
                pass
        elif shape == "huge-body":
            conn.sendall(
                f"RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\nContent-Type: application/sdp\r\n"
                "Content-Length: 99999999999\r\n\r\n".encode()
            )
            forever(conn, b"a=x-junk:" + b"j" * (CHUNK - 11) + b"\r\n")
        elif shape == "endless-headers":
            conn.sendall(f"RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\n".encode())
            forever(conn, b"X-Junk: " + b"j" * 90 + b"\r\n")
        elif shape == "endless-line":
            conn.sendall(f"RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\nX-Junk: ".encode())
            forever(conn, b"j" * CHUNK)
        elif shape in ("many-tracks", "tracks-max"):
            conn.sendall(response(cseq, ["Content-Type: application/sdp"], blobs["tracks"]))
            while conn.recv(4096):
                pass
        elif shape == "giant-sdp":
            conn.sendall(response(cseq, ["Content-Type: application/sdp"], blobs["giant"]))
            while conn.recv(4096):
                pass
    except OSError:
        pass  # the client hung up: what every shape waits for
    finally:
        conn.close()


SHAPES = [
    "huge-body",
    "endless-headers",
    "endless-line",
    "endless-crlf",
    "random",
    "silence",
    "many-tracks",
    "tracks-max",
    "giant-sdp",
    "flood-data",
    "endless-frame",
    "tiny-nals",
    "tiny-fragments",
    "big-frames",
]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", choices=SHAPES, required=True)
    p.add_argument("--port", type=int, default=0, help="0 picks a free port")
    p.add_argument("--tracks", type=int, default=1000, help="many-tracks: how many")
    p.add_argument("--frame-bytes", type=int, default=3_000_000, help="big-frames: bytes per frame")
    args = p.parse_args()

    blobs = {"frame_bytes": args.frame_bytes}
    if args.shape == "random":
        blobs["random"] = random.Random(13).randbytes(CHUNK)
    if args.shape == "many-tracks":
        blobs["tracks"] = sdp(args.tracks)
    if args.shape == "tracks-max":
        head = b"v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=hostile\r\nt=0 0\r\n"
        m = b"m=video 0 RTP/AVP 96\r\n"
        blobs["tracks"] = head + m * ((1_000_000 - len(head)) // len(m))
    if args.shape == "giant-sdp":
        blobs["giant"] = sdp(1, junk_bytes=64 << 20)

    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", args.port))
    srv.listen(16)
    print(f"READY rtsp://127.0.0.1:{srv.getsockname()[1]}/cam", flush=True)
    try:
        while True:
            conn, _ = srv.accept()
            threading.Thread(target=serve, args=(conn, args.shape, blobs), daemon=True).start()
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
