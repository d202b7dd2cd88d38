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
import threading
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


def el8(eid, payload):
    """An element with an 8-byte size, as PIC writes its Tags (src/mkvgen/src/MkvStatics.c:131)."""
    return (eid.to_bytes((eid.bit_length() + 7) // 8, "big")
            + ((1 << 56) | len(payload)).to_bytes(8, "big") + payload)


def tag(name, value=b"", writer=el):
    simple = writer(0x67C8, writer(0x45A3, name) + writer(0x4487, value))
    return writer(0x1254C367, writer(0x7373, simple))


def eofr(pic=True):
    """The end-of-fragment Tags element that PIC sends after a cluster (Stream.c:849)."""
    return tag(b"AWS_KINESISVIDEO_END_OF_FRAGMENT", writer=el8 if pic else el)


def unknown_size_cluster(tc, frames=((0, True), (40, False))):
    return (bytes.fromhex("1F43B675") + b"\x01\xff\xff\xff\xff\xff\xff\xff" + uint(0xE7, tc)
            + b"".join(block(1, r, k) for r, k in frames))


# --- client ---------------------------------------------------------------------------------------

def signed_headers(port, stream="s", secret=SK, extra=None, start_ms=None, ak=AK, token=None,
                   after_signing=None):
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
    SigV4Auth(Credentials(ak, secret, token), "kinesisvideo", REGION).add_auth(req)
    out = dict(req.headers.items())
    out.update(after_signing or {})
    return out


def read_all(s):
    """Everything the peer sends until it closes, then closes our end."""
    data = b""
    while True:
        c = s.recv(65536)
        if not c:
            break
        data += c
    s.close()
    return data


def control(port, op, doc, ak=AK, secret=SK, token=None):
    """A signed control-plane call; returns (status, response headers, JSON body)."""
    body = json.dumps(doc).encode()
    req = AWSRequest(method="POST", url=f"http://127.0.0.1:{port}/{op}", data=body,
                     headers={"Host": f"127.0.0.1:{port}", "Content-Type": "application/json"})
    SigV4Auth(Credentials(ak, secret, token), "kinesisvideo", REGION).add_auth(req)
    s = socket.create_connection(("127.0.0.1", port))
    head = f"POST /{op} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in req.headers.items())
    s.sendall((head + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body)
    data = read_all(s)
    head, _, rest = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), head, json.loads(rest or b"{}")


class OpenPut:
    """A PutMedia request whose body the test sends piece by piece; a thread collects the acks
    (with their arrival times) so tests wait on events instead of sleeping."""

    def __init__(self, port, **kw):
        self.sock = socket.create_connection(("127.0.0.1", port))
        head = "POST /putMedia HTTP/1.1\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in signed_headers(port, **kw).items())
        self.sock.sendall((head + "Transfer-Encoding: chunked\r\n\r\n").encode())
        self.cv = threading.Condition()
        self.acks = []  # (monotonic arrival, ack)
        self.status = None
        self.ended_at = None  # the zero-length chunk arrived
        self.closed_at = None  # the connection closed
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def send(self, data):
        self.sock.sendall(b"%x\r\n" % len(data) + data + b"\r\n")

    def end(self):
        self.sock.sendall(b"0\r\n\r\n")

    def close(self):
        self.sock.close()

    def _read(self):
        buf, body = b"", b""
        try:
            while b"\r\n\r\n" not in buf:
                c = self.sock.recv(65536)
                if not c:
                    return
                buf += c
            head, _, buf = buf.partition(b"\r\n\r\n")
            with self.cv:
                self.status = int(head.split(b" ")[1])
                self.cv.notify_all()
            while True:
                while True:
                    j = buf.find(b"\r\n")
                    if j < 0 or len(buf) < j + 2 + int(buf[:j], 16) + 2:
                        break
                    n = int(buf[:j], 16)
                    body += buf[j + 2:j + 2 + n]
                    buf = buf[j + 2 + n + 2:]
                    with self.cv:
                        while b"\n" in body:
                            line, _, body = body.partition(b"\n")
                            self.acks.append((time.monotonic(), json.loads(line)))
                        if n == 0:
                            self.ended_at = time.monotonic()
                        self.cv.notify_all()
                c = self.sock.recv(65536)
                if not c:
                    return
                buf += c
        except OSError:
            return
        finally:
            with self.cv:
                self.closed_at = time.monotonic()
                self.cv.notify_all()

    def wait(self, pred, timeout=10):
        """Waits until pred() holds (under the lock); returns its last value."""
        with self.cv:
            self.cv.wait_for(pred, timeout=timeout)
            return pred()

    def find(self, event, tc=None):
        for t, a in self.acks:
            if a["EventType"] == event and (tc is None or a.get("FragmentTimecode") == tc):
                return t
        return None

    def wait_ack(self, event, tc=None, timeout=10):
        """The arrival time of the first such ack, or None when none came within timeout."""
        return self.wait(lambda: self.find(event, tc), timeout)

    def events(self):
        with self.cv:
            return [(a["EventType"], a.get("FragmentTimecode")) for _, a in self.acks]


def admin(port, path, doc=None):
    body = json.dumps(doc or {}).encode()
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(f"POST /_admin/{path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
              f"Connection: close\r\n\r\n".encode() + body)
    data = read_all(s)
    return data


def snapshot(port, name):
    """The emulator's admin snapshot of one stream (index, requests, session log)."""
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(f"GET /_admin/streams/{name} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    data = read_all(s)
    return json.loads(data.partition(b"\r\n\r\n")[2])


def start_emulator(data_dir, *extra):
    proc = subprocess.Popen(
        [sys.executable, os.path.join(HERE, "kvs_emulator.py"), "--data-dir", data_dir,
         "--access-key", AK, "--secret-key", SK, "--region", REGION, "--no-auto-create", *extra],
        stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    return proc, int(line.strip().split("=")[1])


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
        cls.proc, cls.port = start_emulator(cls.tmp.name)
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
    def snapshot(cls, name):
        return snapshot(cls.port, name)

    @classmethod
    def admin(cls, path, doc=None):
        return admin(cls.port, path, doc)

    def ended_sessions(self, name, count):
        """The stream's snapshot once `count` sessions are logged with how they ended: a client
        may see the close before the emulator has logged it."""
        deadline = time.monotonic() + 5
        snap = self.snapshot(name)
        while len(snap["session_log"]) < count or \
                any(e["ended"] is None for e in snap["session_log"][:count]):
            self.assertLess(time.monotonic(), deadline, snap["session_log"])
            time.sleep(0.02)
            snap = self.snapshot(name)
        return snap

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

    def test_body_bytes_are_counted_per_100_ms_as_they_arrive(self):
        self.admin("streams/tbytes/create")
        parts = [header(), cluster(NOW_MS), cluster(NOW_MS + 1000)]
        status, _, _ = put_media(self.port, parts, stream="tbytes")
        self.assertEqual(status, 200)
        slots = snapshot(self.port, "tbytes")["bytes_by_100ms"]
        self.assertEqual(sum(n for _, n in slots), sum(len(p) for p in parts))
        self.assertTrue(all(t % 100 == 0 for t, _ in slots), slots)

    def test_acks_arrive_while_the_body_is_still_open(self):
        s = socket.create_connection(("127.0.0.1", self.port))
        head = "POST /putMedia HTTP/1.1\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in signed_headers(self.port).items())
        s.sendall((head + "Transfer-Encoding: chunked\r\n\r\n").encode())
        # The end-of-fragment tag closes the fragment while the body stays open.
        body = header() + cluster(NOW_MS + 500_000) + eofr()
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
        self.assertEqual([a["ErrorCode"] for a in acks if a["EventType"] == "ERROR"],
                         ["INVALID_MKV_DATA"])

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
        body = header() + cluster(NOW_MS) + eofr()
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

    # -- x-amz-content-sha256 (producer-c signs the streaming body as empty)

    def test_unsigned_request_without_content_sha256_is_accepted(self):
        self.admin("streams/tsha/create")
        st, _, acks = put_media(self.port, [header(), cluster(NOW_MS)], stream="tsha",
                                extra={"X-Amz-Content-SHA256": None})
        self.assertEqual(st, 200)
        self.assertEqual(self.persisted(acks), [NOW_MS])
        st, head, _ = put_media(self.port, [header()], stream="tsha", secret="wrong",
                                extra={"X-Amz-Content-SHA256": None})
        self.assertEqual(st, 401)
        self.assertIn(b"NotAuthorizedException", head)
        # Present, it must be signed.
        st, _, _ = put_media(self.port, [header()], stream="tsha",
                             extra={"X-Amz-Content-SHA256": None},
                             after_signing={"X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"})
        self.assertEqual(st, 401)
        requests = self.snapshot("tsha")["requests"]
        self.assertEqual([r["status"] for r in requests], [200, 401, 401])
        self.assertIsNone(requests[0]["content_sha256"])

    # -- when a fragment is closed

    def test_a_complete_cluster_is_acked_only_once_closed(self):
        self.admin("streams/tclose/create")
        put = OpenPut(self.port, stream="tclose")
        try:
            # Other Tags are accepted and close nothing.
            put.send(header() + cluster(NOW_MS) + tag(b"CAMERA", b"front"))
            self.assertIsNotNone(put.wait_ack("BUFFERING", NOW_MS))
            self.assertIsNone(put.wait_ack("RECEIVED", NOW_MS, timeout=1.5),
                              "acked before the fragment was closed")
            put.send(eofr())
            self.assertIsNotNone(put.wait_ack("PERSISTED", NOW_MS))
            put.send(cluster(NOW_MS + 1000))
            self.assertIsNotNone(put.wait_ack("BUFFERING", NOW_MS + 1000))
            self.assertIsNone(put.wait_ack("RECEIVED", NOW_MS + 1000, timeout=0.3))
            put.end()
            self.assertTrue(put.wait(lambda: put.ended_at is not None))
            self.assertEqual([e for e in put.events() if e[0] != "IDLE"],
                             [("BUFFERING", NOW_MS), ("RECEIVED", NOW_MS), ("PERSISTED", NOW_MS),
                              ("BUFFERING", NOW_MS + 1000), ("RECEIVED", NOW_MS + 1000),
                              ("PERSISTED", NOW_MS + 1000)])
        finally:
            put.close()
        log = self.ended_sessions("tclose", 1)["session_log"][-1]
        self.assertEqual((log["eofr_tags"], log["last_cluster_eofr"], log["fragments"], log["ended"]),
                         (1, False, 2, "body_end"))

    def test_end_of_fragment_tag_closes_an_unknown_size_cluster_at_once(self):
        self.admin("streams/teofr/create")
        put = OpenPut(self.port, stream="teofr")
        try:
            sent = time.monotonic()
            put.send(header() + unknown_size_cluster(NOW_MS) + eofr(pic=True))
            received = put.wait_ack("RECEIVED", NOW_MS)
            self.assertIsNotNone(received)
            self.assertLess(received - sent, 1.0)
            self.assertIsNotNone(put.wait_ack("PERSISTED", NOW_MS))
            # A second tag with no open fragment is ignored, not an error.
            put.send(eofr(pic=False))
            put.end()
            self.assertTrue(put.wait(lambda: put.ended_at is not None))
            self.assertNotIn("ERROR", [e[0] for e in put.events()])
        finally:
            put.close()
        snap = self.snapshot("teofr")
        log = snap["session_log"][-1]
        self.assertEqual((log["eofr_tags"], log["last_cluster_eofr"], log["fragments"]), (2, True, 1))
        frag = snap["fragments"][-1]
        self.assertEqual((frag["closed_by"], frag["persisted"]), ("eofr", True))
        self.assertLessEqual(frag["received_ms"], frag["closed_ms"])

    # -- delayed PERSISTED

    def test_delayed_persisted_does_not_hold_back_later_acks(self):
        self.admin("streams/tdelay/create")
        self.admin("streams/tdelay/faults", {"delay_persisted_ms": 1500})
        put = OpenPut(self.port, stream="tdelay")
        try:
            sent1 = time.monotonic()
            put.send(header() + cluster(NOW_MS) + eofr())
            self.assertIsNotNone(put.wait_ack("RECEIVED", NOW_MS))
            sent2 = time.monotonic()
            put.send(cluster(NOW_MS + 1000) + eofr())
            received2 = put.wait_ack("RECEIVED", NOW_MS + 1000)
            self.assertIsNotNone(received2)
            self.assertIsNone(put.find("PERSISTED", NOW_MS), "RECEIVED waited behind PERSISTED")
            persisted1 = put.wait_ack("PERSISTED", NOW_MS)
            self.assertIsNotNone(persisted1)
            self.assertGreaterEqual(persisted1 - sent1, 1.5)
            self.assertGreater(persisted1, received2)
            # The body ends at once; the response still waits for the delayed PERSISTED.
            put.end()
            self.assertTrue(put.wait(lambda: put.ended_at is not None))
            persisted2 = put.find("PERSISTED", NOW_MS + 1000)
            self.assertIsNotNone(persisted2)
            self.assertGreaterEqual(persisted2 - sent2, 1.5)
            self.assertLessEqual(persisted2, put.ended_at)
        finally:
            put.close()
            self.admin("streams/tdelay/faults", {"delay_persisted_ms": 0})

    def test_the_response_does_not_end_before_a_delayed_persisted(self):
        self.admin("streams/tdelay2/create")
        self.admin("streams/tdelay2/faults", {"delay_persisted_ms": 1000})
        started = time.monotonic()
        _, _, acks = put_media(self.port, [header(), cluster(NOW_MS)], stream="tdelay2")
        self.assertGreaterEqual(time.monotonic() - started, 1.0)
        self.assertEqual([a["EventType"] for a in acks], ["BUFFERING", "RECEIVED", "PERSISTED"])
        log = self.snapshot("tdelay2")["session_log"][-1]
        self.assertGreaterEqual(log["last_ack_ms"] - log["body_end_ms"], 1000)
        self.assertLessEqual(log["last_ack_ms"], log["closed_ms"])

    # -- requests and sessions

    def test_requests_and_session_log(self):
        self.admin("streams/tlog/create")
        st, _, _ = put_media(self.port, [header()], stream="tlog", secret="wrong")
        self.assertEqual(st, 401)
        _, _, acks = put_media(self.port, [header(), cluster(NOW_MS), eofr(), cluster(NOW_MS + 1000)],
                               stream="tlog")
        self.assertEqual(self.persisted(acks), [NOW_MS, NOW_MS + 1000])
        self.admin("streams/tlog/faults", {"faults": [{"kind": "cut_after_bytes", "bytes": len(header()) + 10}]})
        put = OpenPut(self.port, stream="tlog")
        try:
            put.send(header() + cluster(NOW_MS + 2000))
            self.assertTrue(put.wait(lambda: put.closed_at is not None))
            self.assertIsNone(put.ended_at)
        finally:
            put.close()
        snap = self.ended_sessions("tlog", 2)
        self.assertEqual(snap["sessions"], 2)
        self.assertEqual([(r["status"], r["error"], r["session"]) for r in snap["requests"]],
                         [(401, "NotAuthorizedException", None), (200, None, 1), (200, None, 2)])
        first, cut = snap["session_log"]
        self.assertEqual(set(first), {"session", "opened_ms", "closed_ms", "access_key", "fragments",
                                      "eofr_tags", "last_cluster_eofr", "body_end_ms", "last_ack_ms",
                                      "ended"})
        self.assertEqual((first["session"], first["access_key"], first["fragments"], first["eofr_tags"],
                          first["last_cluster_eofr"], first["ended"]), (1, AK, 2, 1, False, "body_end"))
        self.assertLessEqual(first["opened_ms"], first["body_end_ms"])
        self.assertLessEqual(first["body_end_ms"], first["last_ack_ms"])
        self.assertLessEqual(first["last_ack_ms"], first["closed_ms"])
        self.assertEqual((cut["session"], cut["ended"], cut["body_end_ms"], cut["fragments"]),
                         (2, "cut", None, 0))
        frags = snap["fragments"]
        self.assertEqual([f["closed_by"] for f in frags], ["eofr", "body_end"])
        for f in frags:
            self.assertTrue(f["persisted"])
            self.assertTrue(first["opened_ms"] <= f["received_ms"] <= first["body_end_ms"])

    # -- ErrorCode

    def test_error_acks_carry_the_error_code(self):
        self.admin("streams/tcode/create")
        for error_id, code in [(4001, "MAX_FRAGMENT_SIZE_REACHED"), (4507, "STREAM_DELETED"),
                               (4999, "UNKNOWN")]:
            self.admin("streams/tcode/faults",
                       {"faults": [{"kind": "error", "at_fragment": 0, "error_id": error_id}]})
            _, _, acks = put_media(self.port, [header(), cluster(NOW_MS)], stream="tcode")
            errors = [a for a in acks if a["EventType"] == "ERROR"]
            self.assertEqual([(a["ErrorId"], a["ErrorCode"]) for a in errors], [(error_id, code)])
            self.assertEqual(errors[0]["FragmentTimecode"], NOW_MS)
        self.assertEqual([e["ended"] for e in self.ended_sessions("tcode", 3)["session_log"]],
                         ["error"] * 3)

    # -- DescribeStream and retention

    def test_describe_stream(self):
        self.admin("streams/tdesc/create")
        st, _, doc = control(self.port, "describeStream", {"StreamName": "tdesc"})
        self.assertEqual(st, 200)
        info = doc["StreamInfo"]
        self.assertEqual(set(info), {"StreamName", "StreamARN", "Status", "DataRetentionInHours",
                                     "CreationTime", "Version", "MediaType", "KmsKeyId"})
        self.assertEqual((info["StreamName"], info["Status"], info["DataRetentionInHours"],
                          info["MediaType"]), ("tdesc", "ACTIVE", 24, "video/h264"))
        self.assertRegex(info["StreamARN"], r"^arn:aws:kinesisvideo:us-east-1:[0-9]+:stream/tdesc/[0-9]+$")
        self.assertIsInstance(info["CreationTime"], float)
        st, _, doc = control(self.port, "describeStream", {"StreamARN": info["StreamARN"]})
        self.assertEqual((st, doc["StreamInfo"]["StreamName"]), (200, "tdesc"))
        st, head, _ = control(self.port, "describeStream", {"StreamName": "tdesc"}, secret="wrong")
        self.assertEqual(st, 401)
        st, head, _ = control(self.port, "describeStream", {"StreamName": "nonexistent"})
        self.assertEqual(st, 404)
        self.assertIn(b"ResourceNotFoundException", head)
        self.assertEqual(self.snapshot("tdesc")["describe_calls"], 2)
        self.admin("streams/tdesc/delete")
        st, _, _ = control(self.port, "describeStream", {"StreamName": "tdesc"})
        self.assertEqual(st, 404)

    def test_retention_zero_gets_received_but_never_persisted(self):
        self.admin("streams/tnoretain/create", {"retention_hours": 0})
        _, _, doc = control(self.port, "describeStream", {"StreamName": "tnoretain"})
        self.assertEqual(doc["StreamInfo"]["DataRetentionInHours"], 0)
        _, _, acks = put_media(self.port, [header(), cluster(NOW_MS), cluster(NOW_MS + 1000)],
                               stream="tnoretain")
        self.assertEqual([a["EventType"] for a in acks], ["BUFFERING", "RECEIVED"] * 2)
        snap = self.snapshot("tnoretain")
        self.assertEqual([f["persisted"] for f in snap["fragments"]], [False, False])
        self.assertEqual(snap["session_log"][-1]["fragments"], 0)

    # -- credentials with an expiry

    def test_expired_credentials_are_refused(self):
        self.admin("streams/texp/create")
        self.admin("credentials", {"access_key": "AKIDOLD", "secret_key": "old", "session_token": "t1",
                                   "expires_ms": int(time.time() * 1000) - 1000})
        st, _, body = put_media(self.port, [header()], stream="texp", ak="AKIDOLD", secret="old", token="t1")
        self.assertEqual(st, 401)
        self.assertIn(b"expired", body)
        st, _, doc = control(self.port, "describeStream", {"StreamName": "texp"},
                             ak="AKIDOLD", secret="old", token="t1")
        self.assertEqual(st, 401)
        self.assertIn("expired", doc["message"])
        self.admin("credentials", {"access_key": "AKIDNEW", "secret_key": "new", "session_token": "t2"})
        st, _, _ = put_media(self.port, [header()], stream="texp", ak="AKIDNEW", secret="new", token="bad")
        self.assertEqual(st, 401)
        st, _, acks = put_media(self.port, [header(), cluster(NOW_MS)], stream="texp",
                                ak="AKIDNEW", secret="new", token="t2")
        self.assertEqual((st, self.persisted(acks)), (200, [NOW_MS]))
        self.assertEqual(self.snapshot("texp")["session_log"][-1]["access_key"], "AKIDNEW")

    def test_a_session_outliving_its_credentials_is_ended(self):
        self.admin("streams/texp2/create")
        expires = int(time.time() * 1000) + 2000
        self.admin("credentials", {"access_key": "AKIDSHORT", "secret_key": "short",
                                   "session_token": "t3", "expires_ms": expires})
        put = OpenPut(self.port, stream="texp2", ak="AKIDSHORT", secret="short", token="t3")
        try:
            put.send(header() + cluster(NOW_MS) + eofr())
            self.assertIsNotNone(put.wait_ack("PERSISTED", NOW_MS))
            put.send(cluster(NOW_MS + 1000))
            self.assertTrue(put.wait(lambda: put.closed_at is not None))
            self.assertGreaterEqual(time.time() * 1000, expires)
            self.assertIsNone(put.ended_at, "the response ended cleanly instead of being closed")
            self.assertIsNone(put.find("RECEIVED", NOW_MS + 1000))
        finally:
            put.close()
        snap = self.ended_sessions("texp2", 1)
        self.assertEqual(snap["expired_sessions"], 1)
        self.assertEqual((snap["session_log"][-1]["ended"], snap["session_log"][-1]["fragments"]),
                         ("expired", 1))


class IdleCloseTest(unittest.TestCase):
    """With a short --idle-close-seconds: IDLE acks, then the connection closes, the open
    fragment unacked."""

    def test_idle_session_is_closed(self):
        with tempfile.TemporaryDirectory() as tmp:
            proc, port = start_emulator(tmp, "--idle-ack-seconds", "0.2", "--idle-close-seconds", "1")
            try:
                admin(port, "streams/tidle/create")
                put = OpenPut(port, stream="tidle")
                try:
                    put.send(header() + cluster(NOW_MS))
                    self.assertIsNotNone(put.wait_ack("IDLE"))
                    self.assertTrue(put.wait(lambda: put.closed_at is not None))
                    self.assertIsNone(put.find("RECEIVED"))
                finally:
                    put.close()
                log = snapshot(port, "tidle")["session_log"][-1]
                self.assertEqual((log["ended"], log["body_end_ms"], log["fragments"]), ("idle", None, 0))
            finally:
                proc.kill()
                proc.wait()
                proc.stdout.close()


if __name__ == "__main__":
    unittest.main(verbosity=1)
