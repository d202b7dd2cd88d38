#!/usr/bin/env python3
"""Self-test of the KVS ingest emulator: it must accept a valid stream and reject, with the
seed's ErrorIds and HTTP statuses, what the real service rejects. The MKV bytes are built here
with a separate tiny EBML writer, and requests are signed with botocore, so nothing of the agent
is involved. Run: python3 tests/kvs_emulator/test_emulator.py (agent/tests/uploader_emulator.rs
runs it too).
"""

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import unittest

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

HERE = os.path.dirname(os.path.abspath(__file__))
AK, SK, REGION = "AKIDSELFTEST", "self-test-secret", "us-east-1"
NOW_MS = int(time.time() * 1000) - 3_600_000


# --- a minimal EBML writer ----------------------------------------------------------------------

def size(n):
    for length in range(1, 9):
        if n < (1 << (7 * length)) - 1:
            return ((1 << (7 * length)) | n).to_bytes(length, "big")
    raise ValueError(n)


def el(eid, payload):
    return eid.to_bytes((eid.bit_length() + 7) // 8, "big") + size(len(payload)) + payload


def uint(eid, v):
    return el(eid, v.to_bytes(max(1, (v.bit_length() + 7) // 8), "big"))


def track(number, ttype=1, codec=b"V_MPEG4/ISO/AVC", cpd=b"\x01\x4d\x40\x1e\xff\xe1\x00\x00"):
    body = uint(0xD7, number) + uint(0x73C5, number) + uint(0x83, ttype) + el(0x86, codec)
    if cpd is not None:
        body += el(0x63A2, cpd)
    return el(0xAE, body)


def header(tracks=None):
    ebml = el(0x1A45DFA3, uint(0x4286, 1) + uint(0x42F7, 1) + el(0x4282, b"matroska")
              + uint(0x4287, 2) + uint(0x4285, 2))
    segment = bytes.fromhex("18538067") + b"\x01\xff\xff\xff\xff\xff\xff\xff"
    info = el(0x1549A966, uint(0x2AD7B1, 1_000_000))
    return ebml + segment + info + el(0x1654AE6B, b"".join(tracks or [track(1)]))


def block(track_no, rel, key, data=b"\x00\x00\x00\x02\x65\x88"):
    return el(0xA3, size(track_no) + rel.to_bytes(2, "big", signed=True)
              + bytes([0x80 if key else 0]) + data)


def cluster(tc, frames=((0, True), (40, False)), track_no=1):
    return el(0x1F43B675, uint(0xE7, tc) + b"".join(block(track_no, r, k) for r, k in frames))


# --- client ---------------------------------------------------------------------------------------

def signed_headers(port, stream="s", secret=SK, extra=None, start_ms=None):
    h = {
        "x-amzn-stream-name": stream,
        "x-amzn-fragment-timecode-type": "ABSOLUTE",
        "x-amzn-producer-start-timestamp": "%.3f" % ((start_ms if start_ms is not None else NOW_MS) / 1000),
        "X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD",
        "Host": f"127.0.0.1:{port}",
    }
    h.update(extra or {})
    h = {k: v for k, v in h.items() if v is not None}
    req = AWSRequest(method="POST", url=f"http://127.0.0.1:{port}/putMedia", headers=h)
    SigV4Auth(Credentials(AK, secret), "kinesisvideo", REGION).add_auth(req)
    return dict(req.headers.items())


def put_media(port, body_parts, **kw):
    """Sends a chunked PutMedia; returns (status, headers text, [ack dicts] or body)."""
    s = socket.create_connection(("127.0.0.1", port))
    head = "POST /putMedia HTTP/1.1\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in signed_headers(port, **kw).items())
    s.sendall((head + "Transfer-Encoding: chunked\r\n\r\n").encode())
    try:
        for p in body_parts:
            if p:
                s.sendall(b"%x\r\n" % len(p) + p + b"\r\n")
        s.sendall(b"0\r\n\r\n")
    except OSError:
        pass
    data = b""
    s.settimeout(20)
    while True:
        try:
            chunk = s.recv(65536)
        except OSError:
            break
        if not chunk:
            break
        data += chunk
    s.close()
    head, _, rest = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1])
    if b"chunked" not in head.lower():
        return status, head, rest
    body, i = b"", 0
    while i < len(rest):
        j = rest.index(b"\r\n", i)
        n = int(rest[i:j], 16)
        if n == 0:
            break
        body += rest[j + 2:j + 2 + n]
        i = j + 2 + n + 2
    acks = [json.loads(line) for line in body.split(b"\n") if line.strip()]
    return status, head, acks


class EmulatorTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.proc = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "kvs_emulator.py"), "--data-dir", cls.tmp.name,
             "--access-key", AK, "--secret-key", SK, "--region", REGION, "--no-auto-create"],
            stdout=subprocess.PIPE, text=True)
        line = cls.proc.stdout.readline()
        cls.port = int(line.strip().split("=")[1])
        for name in ["s", "t4004", "t4010", "t4011", "tkey", "t4002", "t4007", "tcpd", "tseg",
                     "t4000", "t4005", "tstream", "tgarbage"]:
            cls.admin(f"streams/{name}/create")

    @classmethod
    def tearDownClass(cls):
        cls.proc.kill()
        cls.proc.wait()
        cls.proc.stdout.close()
        cls.tmp.cleanup()

    @classmethod
    def admin(cls, path, doc=None):
        body = json.dumps(doc or {}).encode()
        s = socket.create_connection(("127.0.0.1", cls.port))
        s.sendall(f"POST /_admin/{path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
                  f"Connection: close\r\n\r\n".encode() + body)
        data = b""
        while True:
            c = s.recv(65536)
            if not c:
                break
            data += c
        s.close()
        return data

    def errors(self, acks):
        return [a["ErrorId"] for a in acks if a["EventType"] == "ERROR"]

    def persisted(self, acks):
        return [a["FragmentTimecode"] for a in acks if a["EventType"] == "PERSISTED"]

    def test_valid_stream_is_persisted_with_acks_in_order(self):
        status, _, acks = put_media(self.port, [header(), cluster(NOW_MS), cluster(NOW_MS + 1000)])
        self.assertEqual(status, 200)
        self.assertEqual([a["EventType"] for a in acks],
                         ["BUFFERING", "RECEIVED", "PERSISTED"] * 2)
        self.assertEqual(self.persisted(acks), [NOW_MS, NOW_MS + 1000])
        self.assertEqual(len(acks[2]["FragmentNumber"]), 47)

    def test_acks_arrive_while_the_body_is_still_open(self):
        s = socket.create_connection(("127.0.0.1", self.port))
        head = "POST /putMedia HTTP/1.1\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in signed_headers(self.port).items())
        s.sendall((head + "Transfer-Encoding: chunked\r\n\r\n").encode())
        body = header() + cluster(NOW_MS + 500_000)
        s.sendall(b"%x\r\n" % len(body) + body + b"\r\n")
        s.settimeout(10)
        got = b""
        while b"PERSISTED" not in got:
            c = s.recv(4096)
            self.assertTrue(c, "connection closed before the ack")
            got += c
        s.sendall(b"0\r\n\r\n")
        s.close()

    def test_garbage_is_4006(self):
        _, _, acks = put_media(self.port, [b"\x00garbage" * 10], stream="tgarbage")
        self.assertEqual(self.errors(acks), [4006])

    def test_second_segment_is_4006(self):
        _, _, acks = put_media(self.port, [header(), cluster(NOW_MS), header(), cluster(NOW_MS + 1000)],
                               stream="tseg")
        self.assertEqual(self.persisted(acks), [NOW_MS])
        self.assertEqual(self.errors(acks), [4006])

    def test_timecode_going_back_is_4004(self):
        _, _, acks = put_media(self.port, [header(), cluster(NOW_MS + 5000), cluster(NOW_MS + 1000)],
                               stream="t4004")
        self.assertEqual(self.errors(acks), [4004])
        err = [a for a in acks if a["EventType"] == "ERROR"][0]
        self.assertEqual(err["FragmentTimecode"], NOW_MS + 1000)

    def test_undeclared_track_is_4010(self):
        _, _, acks = put_media(self.port, [header(), cluster(NOW_MS, track_no=2)], stream="t4010")
        self.assertEqual(self.errors(acks), [4010])

    def test_track_without_frames_is_4011(self):
        tracks = [track(1), track(2, ttype=2, codec=b"A_AAC", cpd=b"\x12\x10")]
        _, _, acks = put_media(self.port, [header(tracks), cluster(NOW_MS)], stream="t4011")
        self.assertEqual(self.errors(acks), [4011])

    def test_more_than_three_tracks_is_4005(self):
        tracks = [track(1)] + [track(n, ttype=2, codec=b"A_AAC", cpd=b"\x12\x10") for n in (2, 3, 4)]
        _, _, acks = put_media(self.port, [header(tracks), cluster(NOW_MS)], stream="t4005")
        self.assertEqual(self.errors(acks), [4005])

    def test_fragment_not_starting_with_a_key_frame_is_4006(self):
        _, _, acks = put_media(self.port, [header(), cluster(NOW_MS, frames=((0, False), (40, True)))],
                               stream="tkey")
        self.assertEqual(self.errors(acks), [4006])

    def test_fragment_over_20_seconds_is_4002(self):
        _, _, acks = put_media(self.port, [header(), cluster(NOW_MS, frames=((0, True), (20_040, False)))],
                               stream="t4002")
        self.assertEqual(self.errors(acks), [4002])

    def test_fragment_before_producer_start_is_4007(self):
        _, _, acks = put_media(self.port, [header(), cluster(NOW_MS)], stream="t4007",
                               start_ms=NOW_MS + 60_000)
        self.assertEqual(self.errors(acks), [4007])

    def test_video_track_without_codec_private_is_4006(self):
        _, _, acks = put_media(self.port, [header([track(1, cpd=None)]), cluster(NOW_MS)], stream="tcpd")
        self.assertEqual(self.errors(acks), [4006])

    def test_body_ending_inside_a_cluster_is_4000(self):
        c = cluster(NOW_MS)
        _, _, acks = put_media(self.port, [header(), c[:-3]], stream="t4000")
        self.assertEqual(self.errors(acks), [4000])
        self.assertEqual([a.get("FragmentTimecode") for a in acks if a["EventType"] == "ERROR"], [NOW_MS])

    def test_http_errors(self):
        st, head, body = put_media(self.port, [header()], secret="wrong")
        self.assertEqual(st, 401)
        self.assertIn(b"NotAuthorizedException", head)
        st, head, _ = put_media(self.port, [header()], extra={"x-amzn-fragment-timecode-type": None})
        self.assertEqual(st, 400)
        self.assertIn(b"InvalidArgumentException", head)
        st, _, _ = put_media(self.port, [header()],
                             extra={"x-amzn-stream-arn": "arn:aws:kinesisvideo:us-east-1:1:stream/s/1"})
        self.assertEqual(st, 400)
        st, head, _ = put_media(self.port, [header()], stream="nonexistent")
        self.assertEqual(st, 404)
        self.assertIn(b"ResourceNotFoundException", head)

    def test_stream_deleted_mid_request_is_4008_then_404(self):
        s = socket.create_connection(("127.0.0.1", self.port))
        head = "POST /putMedia HTTP/1.1\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in signed_headers(self.port, stream="tstream").items())
        s.sendall((head + "Transfer-Encoding: chunked\r\n\r\n").encode())
        body = header() + cluster(NOW_MS)
        s.sendall(b"%x\r\n" % len(body) + body + b"\r\n")
        s.settimeout(10)
        got = b""
        while b"PERSISTED" not in got:
            c = s.recv(4096)
            self.assertTrue(c)
            got += c
        self.admin("streams/tstream/delete")
        more = cluster(NOW_MS + 1000)
        s.sendall(b"%x\r\n" % len(more) + more + b"\r\n0\r\n\r\n")
        while True:
            c = s.recv(4096)
            if not c:
                break
            got += c
        s.close()
        self.assertIn(b'"ErrorId":4008', got)
        st, _, _ = put_media(self.port, [header(), cluster(NOW_MS + 2000)], stream="tstream")
        self.assertEqual(st, 404)

if __name__ == "__main__":
    unittest.main(verbosity=1)
