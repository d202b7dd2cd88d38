#!/usr/bin/env python3
"""A strict, independent emulator of the Kinesis Video Streams ingest path for tests.

Serves GetDataEndpoint and DescribeStream (POST /getDataEndpoint, /describeStream: the control
plane) and PutMedia (POST /putMedia, the data plane) on one loopback port. It shares no code
with the agent: SigV4 signatures are recomputed with botocore (AWS's own implementation) from
the test credentials, and the Matroska stream is parsed by the small EBML reader below, as the
bytes arrive, with the rules of the PutMedia page of the seed:

- HTTP: exactly one of x-amzn-stream-name / x-amzn-stream-arn, x-amzn-fragment-timecode-type
  ABSOLUTE or RELATIVE, x-amzn-producer-start-timestamp in seconds; otherwise 400
  InvalidArgumentException; a bad signature, an unknown access key, expired credentials or a
  wrong X-Amz-Security-Token is 401 NotAuthorizedException, an unknown stream 404
  ResourceNotFoundException (with the x-amz-ErrorType header);
- SigV4 payload hash: the x-amz-content-sha256 header's value when present (it must then be
  signed; UNSIGNED-PAYLOAD is fine), else the body's sha256 -- for the streaming PutMedia body
  that is the hash of the empty string, as producer-c signs it
  (producer-c src/source/Common/AwsV4Signer.c:498-500);
- MKV: an EBML header (DocType matroska or webm) then exactly one Segment, Info before the
  Clusters, Tracks with 1 to 3 entries, a video track with CodecID and CodecPrivate; each Cluster
  is a fragment: Timecode first, every block on a declared track (4010), every track with a
  frame (4011), the first block a key frame, at most 50 MB (4001) and 20 s (4002), its earliest
  frame after the previous fragment's latest within the request (4004), a producer timestamp
  not before the producer start timestamp nor in the future (4007); anything unparseable is
  4006 and a body that ends inside an element 4000; a connection older than the limit is 4003.

When a fragment is acked: BUFFERING goes out at the Cluster's Timecode; RECEIVED and PERSISTED
only once the fragment is closed, which is when the next Cluster starts, when a Tags element
with a SimpleTag named AWS_KINESISVIDEO_END_OF_FRAGMENT arrives (what PIC sends after a cluster,
src/client/src/Stream.c:849, bytes in src/mkvgen/src/MkvStatics.c:131-183), or when the body
ends. A complete Cluster followed by nothing while the body stays open is not acked. Other Tags
are accepted and close nothing; an end-of-fragment tag with no open fragment is ignored. A
stream with retention 0 gets RECEIVED but never PERSISTED. An ERROR ack (with ErrorId and
ErrorCode) ends the response; a complete fragment still open when an error ends the session is
closed (acked) first. IDLE goes out while no data flows; after --idle-close-seconds without
data the connection is dropped (an open fragment is not acked).

Acks are written as chunked JSON lines by their own thread, each at its due time (delays are
test faults), not first-in first-out; the response ends (zero-length chunk) only after every
due ack is written. Persisted fragments are appended, byte for byte as received, to
``{data_dir}/{stream}/media-N.mkv`` (a new file when the MKV header's tracks change) with
``index.json`` beside it, so tests can run ffprobe and compare bytes.

Test controls (``/_admin/...``, no signature): faults per stream (cut the connection after N
bytes or in the middle of the Nth fragment, answer the Nth fragment with ERROR X, delay acks or
only PERSISTED acks), creating (with a retention) and deleting a stream (4008, 404), extra
credentials with an expiry (a session outliving its credentials is ended), reading a stream's
index, requests and per-session log. Prints ``KVS_EMULATOR_PORT=<port>`` on stdout once it
accepts connections.

Needs Python 3.9+ and ``botocore`` (pip install botocore).
"""

import argparse
import collections
import datetime
import hashlib
import heapq
import hmac
import http.server
import json
import os
import re
import socket
import sys
import threading
import time

try:
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials
except ImportError:
    sys.exit("kvs_emulator: needs botocore for SigV4 verification: python3 -m pip install botocore")

# --- limits from the seed -----------------------------------------------------------------------

MAX_FRAGMENT_BYTES = 50 * 1000 * 1000
MAX_FRAGMENT_DURATION_MS = 20_000
MAX_TRACKS = 3
MAX_CODEC_PRIVATE = 1 << 20
MAX_HEADER_ELEMENT = 2 << 20
CLOCK_SKEW_S = 15 * 60
FUTURE_SLACK_MS = 10 * 60 * 1000
STREAM_NAME_RE = re.compile(r"^[a-zA-Z0-9_.-]{1,256}$")
STREAM_ARN_RE = re.compile(r"^arn:[a-z\d-]+:kinesisvideo:[a-z0-9-]+:[0-9]+:[a-z]+/([a-zA-Z0-9_.-]+)/[0-9]+$")
API_NAMES = {
    "PUT_MEDIA", "GET_MEDIA", "LIST_FRAGMENTS", "GET_MEDIA_FOR_FRAGMENT_LIST",
    "GET_HLS_STREAMING_SESSION_URL", "GET_DASH_STREAMING_SESSION_URL", "GET_CLIP", "GET_IMAGES",
}

# --- EBML IDs (with their marker bits, as written) ------------------------------------------------

EBML = 0x1A45DFA3
EBML_VERSION, EBML_READ_VERSION = 0x4286, 0x42F7
EBML_MAX_ID_LENGTH, EBML_MAX_SIZE_LENGTH = 0x42F2, 0x42F3
DOC_TYPE, DOC_TYPE_VERSION, DOC_TYPE_READ_VERSION = 0x4282, 0x4287, 0x4285
SEGMENT = 0x18538067
SEEK_HEAD, INFO, TRACKS, CLUSTER, CUES, TAGS, CHAPTERS, ATTACHMENTS = (
    0x114D9B74, 0x1549A966, 0x1654AE6B, 0x1F43B675, 0x1C53BB6B, 0x1254C367, 0x1043A770, 0x1941A469)
VOID, CRC32 = 0xEC, 0xBF
TIMECODE_SCALE = 0x2AD7B1
TRACK_ENTRY, TRACK_NUMBER, TRACK_UID, TRACK_TYPE = 0xAE, 0xD7, 0x73C5, 0x83
CODEC_ID, CODEC_PRIVATE, VIDEO = 0x86, 0x63A2, 0xE0
TIMECODE, SIMPLE_BLOCK, BLOCK_GROUP, BLOCK, REFERENCE_BLOCK = 0xE7, 0xA3, 0xA0, 0xA1, 0xFB
POSITION, PREV_SIZE, SILENT_TRACKS, BLOCK_DURATION = 0xA7, 0xAB, 0x5854, 0x9B
TOP_LEVEL = {SEEK_HEAD, INFO, TRACKS, CLUSTER, CUES, TAGS, CHAPTERS, ATTACHMENTS, EBML, SEGMENT}
SKIPPED_IN_SEGMENT = {SEEK_HEAD, CUES, CHAPTERS, ATTACHMENTS, VOID, CRC32}
TAG, SIMPLE_TAG, TAG_NAME, TAG_STRING = 0x7373, 0x67C8, 0x45A3, 0x4487
END_OF_FRAGMENT_TAG = "AWS_KINESISVIDEO_END_OF_FRAGMENT"

# The seed's PutMedia ErrorIds (4507 from PIC src/client/include/.../Include.h:786).
ERROR_NAMES = {
    4000: "STREAM_READ_ERROR", 4001: "MAX_FRAGMENT_SIZE_REACHED",
    4002: "MAX_FRAGMENT_DURATION_REACHED", 4003: "MAX_CONNECTION_DURATION_REACHED",
    4004: "FRAGMENT_TIMECODE_LESSER_THAN_PREVIOUS", 4005: "MORE_THAN_ALLOWED_TRACKS_FOUND",
    4006: "INVALID_MKV_DATA", 4007: "INVALID_PRODUCER_TIMESTAMP", 4008: "STREAM_NOT_ACTIVE",
    4009: "FRAGMENT_METADATA_LIMIT_REACHED", 4010: "TRACK_NUMBER_MISMATCH",
    4011: "FRAMES_MISSING_FOR_TRACK", 4012: "INVALID_FRAGMENT_METADATA",
    4500: "KMS_KEY_ACCESS_DENIED", 4501: "KMS_KEY_DISABLED", 4502: "KMS_KEY_VALIDATION_ERROR",
    4503: "KMS_KEY_UNAVAILABLE", 4504: "KMS_KEY_INVALID_USAGE", 4505: "KMS_KEY_INVALID_STATE",
    4506: "KMS_KEY_NOT_FOUND", 4507: "STREAM_DELETED", 5000: "INTERNAL_ERROR",
    5001: "ARCHIVAL_ERROR",
}
ACCOUNT = "123456789012"


def wall_ms():
    return int(time.time() * 1000)


class AckError(Exception):
    """The stream violates a rule: answered with an ERROR ack, then the response ends."""

    def __init__(self, error_id, message, timecode=None, dropped=False):
        super().__init__(f"{error_id} {ERROR_NAMES.get(error_id, 'UNKNOWN')}: {message}")
        self.error_id = error_id
        self.timecode = timecode
        # The client's connection closed before the body ended (not a rule the data broke).
        self.dropped = dropped


class Cut(Exception):
    """A test fault: drop the TCP connection now."""


class BodyEnd(Exception):
    """The request body ended (cleanly, at an element boundary)."""


# --- the request body: chunked transfer decoding, read as it arrives ----------------------------

class Body:
    def __init__(self, rfile, chunked, length, on_bytes, on_wire=None):
        self.rfile = rfile
        # Called with the size of each read off the wire (the stream's bandwidth record).
        self.on_wire = on_wire
        self.chunked = chunked
        self.left_in_chunk = 0 if chunked else (length or 0)
        self.done = False
        self.buf = bytearray()
        self.pos = 0
        self.capture = None
        self.on_bytes = on_bytes
        # Wall ms the body ended (terminator read / Content-Length reached), None until then.
        self.end_ms = None
        # (stream offset just past the bytes of one read, wall ms it arrived), for arrival().
        self.fills = collections.deque()

    def _fill(self, want):
        """Reads more bytes from the wire into buf; returns False at the end of the body."""
        while len(self.buf) < want:
            if self.done:
                return False
            if self.left_in_chunk == 0:
                if not self.chunked:
                    self.done = True
                    self.end_ms = wall_ms()
                    continue
                line = self.rfile.readline(1024)
                if not line.endswith(b"\n"):
                    raise AckError(4000, "connection closed inside the chunked body", dropped=True)
                try:
                    size = int(line.split(b";")[0].strip() or b"x", 16)
                except ValueError:
                    raise AckError(4000, "malformed chunk size line")
                if size == 0:
                    while True:
                        trailer = self.rfile.readline(8192)
                        if trailer in (b"\r\n", b"\n"):
                            break
                        if not trailer:
                            raise AckError(4000, "connection closed in the trailers", dropped=True)
                    self.done = True
                    self.end_ms = wall_ms()
                    continue
                self.left_in_chunk = size
            data = self.rfile.read1(min(self.left_in_chunk, 1 << 16)) if hasattr(
                self.rfile, "read1") else self.rfile.read(min(self.left_in_chunk, 1 << 16))
            if not data:
                raise AckError(4000, "connection closed inside the body", dropped=True)
            self.left_in_chunk -= len(data)
            if self.on_wire is not None:
                self.on_wire(len(data))
            if self.chunked and self.left_in_chunk == 0:
                crlf = self.rfile.read(2)
                if crlf != b"\r\n":
                    raise AckError(4000, "bad chunk terminator", dropped=len(crlf) < 2)
            self.buf += data
            self.fills.append((self.pos + len(self.buf), wall_ms()))
        return True

    def arrival_ms(self, offset):
        """Wall ms the byte just before stream offset `offset` arrived (offsets only grow)."""
        while len(self.fills) > 1 and self.fills[0][0] < offset:
            self.fills.popleft()
        return self.fills[0][1] if self.fills else wall_ms()

    def at_end(self):
        return not self._fill(1)

    def peek(self, n):
        self._fill(n)
        return bytes(self.buf[:n])

    def read(self, n):
        if not self._fill(n):
            raise AckError(4000, f"body ended inside an element ({len(self.buf)} of {n} bytes)")
        out = bytes(self.buf[:n])
        del self.buf[:n]
        self.pos += n
        if self.capture is not None:
            self.capture += out
        self.on_bytes(self.pos)
        return out


def read_vint(body, is_id):
    first = body.peek(1)
    if not first:
        raise BodyEnd()
    b0 = first[0]
    length = 1
    mask = 0x80
    while length <= 8 and not (b0 & mask):
        mask >>= 1
        length += 1
    if length > (4 if is_id else 8):
        raise AckError(4006, f"invalid {'ID' if is_id else 'size'} lead byte {b0:#x}")
    raw = body.read(length)
    if is_id:
        return int.from_bytes(raw, "big")
    value = raw[0] & (mask - 1)
    for b in raw[1:]:
        value = (value << 8) | b
    unknown = value == (1 << (7 * length)) - 1
    return None if unknown else value


def read_element_header(body):
    """Raises BodyEnd only when the body ends cleanly before the element."""
    eid = read_vint(body, True)
    try:
        return eid, read_vint(body, False)
    except BodyEnd:
        raise AckError(4000, "body ended inside an element header")


def children(data):
    """Parses a fully read master element body into (id, payload) pairs."""
    out, i = [], 0
    while i < len(data):
        def vint(is_id):
            nonlocal i
            b0 = data[i]
            length, mask = 1, 0x80
            while length <= 8 and not (b0 & mask):
                mask >>= 1
                length += 1
            if length > (4 if is_id else 8) or i + length > len(data):
                raise AckError(4006, "malformed element in a header")
            raw = data[i:i + length]
            i += length
            if is_id:
                return int.from_bytes(raw, "big")
            v = raw[0] & (mask - 1)
            for b in raw[1:]:
                v = (v << 8) | b
            if v == (1 << (7 * length)) - 1:
                raise AckError(4006, "unknown size inside a header element")
            return v
        eid = vint(True)
        size = vint(False)
        if i + size > len(data):
            raise AckError(4006, "child element overruns its parent")
        out.append((eid, data[i:i + size]))
        i += size
    return out


def uint(b):
    if len(b) > 8:
        raise AckError(4006, "integer longer than 8 bytes")
    return int.from_bytes(b, "big") if b else 0


def parse_ebml_header(data):
    fields = {eid: v for eid, v in children(data)}
    doc_type = fields.get(DOC_TYPE, b"matroska").rstrip(b"\0").decode("ascii", "replace")
    if doc_type not in ("matroska", "webm"):
        raise AckError(4006, f"DocType {doc_type!r}")
    if uint(fields.get(EBML_READ_VERSION, b"\x01")) > 1:
        raise AckError(4006, "EBMLReadVersion > 1")
    if uint(fields.get(DOC_TYPE_READ_VERSION, b"\x01")) > 2:
        raise AckError(4006, "DocTypeReadVersion > 2")


def parse_tracks(data):
    tracks = {}
    for eid, entry in children(data):
        if eid in (VOID, CRC32):
            continue
        if eid != TRACK_ENTRY:
            raise AckError(4006, f"element {eid:#x} in Tracks")
        fields = {}
        for cid, v in children(entry):
            fields[cid] = v
        if TRACK_NUMBER not in fields or uint(fields[TRACK_NUMBER]) == 0:
            raise AckError(4006, "TrackEntry without TrackNumber")
        number = uint(fields[TRACK_NUMBER])
        if number in tracks:
            raise AckError(4006, f"duplicate track number {number}")
        codec_id = fields.get(CODEC_ID, b"").rstrip(b"\0").decode("ascii", "replace")
        track_type = uint(fields.get(TRACK_TYPE, b""))
        if not codec_id:
            raise AckError(4006, f"track {number} has no CodecID")
        cpd = fields.get(CODEC_PRIVATE)
        if cpd is not None and len(cpd) > MAX_CODEC_PRIVATE:
            raise AckError(4006, f"track {number} CodecPrivate over 1 MiB")
        tracks[number] = {"type": track_type, "codec_id": codec_id, "codec_private": cpd}
    if not tracks:
        raise AckError(4006, "Tracks without a TrackEntry")
    if len(tracks) > MAX_TRACKS:
        raise AckError(4005, f"{len(tracks)} tracks, at most {MAX_TRACKS}")
    video = [t for t in tracks.values() if t["type"] == 1]
    if not video:
        raise AckError(4006, "no video track")
    for t in video:
        if not t["codec_private"]:
            raise AckError(4006, f"video track {t['codec_id']} without CodecPrivate")
    return tracks


def parse_block(data, simple):
    """Returns (track number, relative timecode, key flag or None for Block)."""
    if len(data) < 4:
        raise AckError(4006, "block shorter than its header")
    b0 = data[0]
    length, mask = 1, 0x80
    while length <= 8 and not (b0 & mask):
        mask >>= 1
        length += 1
    if length > 8 or len(data) < length + 3:
        raise AckError(4006, "bad block track number")
    track = b0 & (mask - 1)
    for b in data[1:length]:
        track = (track << 8) | b
    rel = int.from_bytes(data[length:length + 2], "big", signed=True)
    flags = data[length + 2]
    if len(data) == length + 3:
        raise AckError(4006, "block without frame data")
    key = bool(flags & 0x80) if simple else None
    return track, rel, key


def has_end_of_fragment(data):
    """Parses a Tags element's body; True when a SimpleTag names AWS_KINESISVIDEO_END_OF_FRAGMENT.

    PIC writes Tags > Tag > SimpleTag > TagName, TagString (src/mkvgen/src/MkvStatics.c:131-183)
    with 8-byte sizes; any valid EBML sizes are read here. SimpleTags may nest.
    """
    found = False

    def simple(payload):
        nonlocal found
        for cid, v in children(payload):
            if cid == TAG_NAME and v.rstrip(b"\0") == END_OF_FRAGMENT_TAG.encode():
                found = True
            elif cid == SIMPLE_TAG:
                simple(v)

    for eid, tag in children(data):
        if eid in (VOID, CRC32):
            continue
        if eid != TAG:
            raise AckError(4006, f"element {eid:#x} in Tags")
        for cid, v in children(tag):
            if cid == SIMPLE_TAG:
                simple(v)
    return found


# --- server state ---------------------------------------------------------------------------------

class Stream:
    def __init__(self, name, root, retention_hours):
        self.name = name
        self.dir = os.path.join(root, name)
        os.makedirs(self.dir, exist_ok=True)
        self.active = True
        self.lock = threading.Lock()
        self.fragments = []
        self.files = []
        self.header_key = None
        self.sessions = 0
        self.endpoint_calls = 0
        self.describe_calls = 0
        self.expired_sessions = 0
        self.errors = []
        self.requests = []
        self.session_log = []
        # Body bytes received per 100 ms slot of wall time (slot start ms -> bytes).
        self.bytes_by_100ms = {}
        self.retention_hours = retention_hours
        self.creation_time = time.time()
        self.version = os.urandom(10).hex()
        # Faults, counted in fragments that reach the fault point since armed.
        self.faults = []
        self.delay_acks_ms = 0
        self.delay_persisted_ms = 0
        self.ack_hold = False

    @property
    def arn(self):
        return (f"arn:aws:kinesisvideo:{{region}}:{ACCOUNT}:stream/{self.name}/"
                f"{int(self.creation_time * 1000)}")

    def persist(self, header, tracks_key, cluster, entry):
        with self.lock:
            if tracks_key != self.header_key:
                self.header_key = tracks_key
                path = os.path.join(self.dir, f"media-{len(self.files)}.mkv")
                with open(path, "wb") as f:
                    f.write(header)
                self.files.append(path)
            path = self.files[-1]
            with open(path, "ab") as f:
                entry["file"] = os.path.basename(path)
                entry["offset"] = f.tell()
                f.write(cluster)
            self.fragments.append(entry)

    def log_request(self, entry):
        with self.lock:
            self.requests.append(entry)

    def write_index(self):
        with self.lock:
            doc = self.snapshot()
            tmp = os.path.join(self.dir, "index.json.tmp")
            with open(tmp, "w") as f:
                json.dump(doc, f, indent=1)
            os.replace(tmp, os.path.join(self.dir, "index.json"))
            return doc

    def count_bytes(self, n):
        """Records `n` body bytes just read off the wire, for bandwidth measurements."""
        slot = wall_ms() // 100 * 100
        with self.lock:
            self.bytes_by_100ms[slot] = self.bytes_by_100ms.get(slot, 0) + n

    def snapshot(self):
        """The stream's state; the caller holds the lock."""
        return {
            "bytes_by_100ms": [[t, n] for t, n in sorted(self.bytes_by_100ms.items())],
            "stream": self.name,
            "active": self.active,
            "retention_hours": self.retention_hours,
            "sessions": self.sessions,
            "expired_sessions": self.expired_sessions,
            "endpoint_calls": self.endpoint_calls,
            "describe_calls": self.describe_calls,
            "files": [os.path.basename(p) for p in self.files],
            "dir": self.dir,
            "fragments": [dict(f) for f in self.fragments],
            "errors": list(self.errors),
            "requests": [dict(r) for r in self.requests],
            "session_log": [dict(e) for e in self.session_log],
        }


class State:
    def __init__(self, args):
        self.args = args
        self.lock = threading.Lock()
        self.streams = {}
        self.deleted = set()
        self.counter = 0
        self.port = None
        # access key -> {"secret_key", "session_token" or None, "expires_ms" or None}; the
        # --access-key pair never expires.
        self.credentials = {args.access_key: {"secret_key": args.secret_key,
                                              "session_token": None, "expires_ms": None}}

    def stream(self, name, create=None, retention_hours=None):
        with self.lock:
            s = self.streams.get(name)
            if s is None:
                if name in self.deleted or not (self.args.auto_create if create is None else create):
                    return None
                s = Stream(name, self.args.data_dir,
                           self.args.default_retention_hours if retention_hours is None
                           else retention_hours)
                self.streams[name] = s
            elif retention_hours is not None:
                s.retention_hours = retention_hours
            return s

    def credential(self, access_key):
        with self.lock:
            c = self.credentials.get(access_key)
            return dict(c) if c is not None else None

    def next_fragment_number(self):
        with self.lock:
            self.counter += 1
            # Real fragment numbers are 47-digit decimals: too long for a 64-bit integer.
            return "91343852333" + f"{self.counter:036d}"


# --- SigV4 verification with botocore -------------------------------------------------------------

AUTH_RE = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request, ?"
    r"SignedHeaders=([a-z0-9;\-]+), ?Signature=([0-9a-f]{64})$")
EXPIRED_TOKEN = "the security token included in the request is expired"


def verify_sigv4(state, handler, body_bytes):
    """Recomputes the signature with botocore; returns (error message or None, access key)."""
    auth = handler.headers.get("Authorization", "")
    m = AUTH_RE.match(auth)
    if not m:
        return "missing or malformed Authorization header", None
    key_id, date, region, service, signed, signature = m.groups()
    cred = state.credential(key_id)
    if cred is None:
        return "unknown access key", key_id
    if service != "kinesisvideo":
        return f"credential scope service {service!r}, expected kinesisvideo", key_id
    if region != state.args.region:
        return f"credential scope region {region!r}, expected {state.args.region!r}", key_id
    amz_date = handler.headers.get("X-Amz-Date", "")
    try:
        when = datetime.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.timezone.utc)
    except ValueError:
        return "missing or malformed X-Amz-Date", key_id
    if amz_date[:8] != date:
        return "credential scope date differs from X-Amz-Date", key_id
    if abs((datetime.datetime.now(datetime.timezone.utc) - when).total_seconds()) > CLOCK_SKEW_S:
        return "signature expired (clock skew over 15 minutes)", key_id
    names = signed.split(";")
    if "host" not in names or "x-amz-date" not in names:
        return "host and x-amz-date must be signed", key_id
    if handler.headers.get("x-amz-content-sha256") is not None and "x-amz-content-sha256" not in names:
        return "x-amz-content-sha256 is present but not signed", key_id
    headers = {}
    for n in names:
        values = handler.headers.get_all(n)
        if values is None:
            return f"signed header {n} missing", key_id
        headers[n] = ",".join(values)
    url = "http://" + handler.headers.get("Host", "") + handler.path
    req = AWSRequest(method=handler.command, url=url, headers=headers, data=body_bytes)
    req.context["timestamp"] = amz_date
    signer = SigV4Auth(Credentials(key_id, cred["secret_key"]), "kinesisvideo", region)
    # botocore takes the payload hash from X-Amz-Content-SHA256 when it is (signed and so)
    # present, e.g. UNSIGNED-PAYLOAD; else the sha256 of the body -- for PutMedia (body None)
    # the empty string's, as producer-c signs its streaming body (AwsV4Signer.c:498-500).
    canonical = signer.canonical_request(req)
    expected = signer.signature(signer.string_to_sign(req, canonical), req)
    if not hmac.compare_digest(expected, signature):
        return "signature mismatch", key_id
    if cred["expires_ms"] is not None and wall_ms() >= cred["expires_ms"]:
        return EXPIRED_TOKEN, key_id
    if cred["session_token"] is not None and \
            handler.headers.get("X-Amz-Security-Token") != cred["session_token"]:
        return "the security token included in the request is invalid", key_id
    return None, key_id


# --- the HTTP handler -----------------------------------------------------------------------------

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "kvs-emulator"

    def log_message(self, fmt, *args):
        if self.server.state.args.verbose:
            sys.stderr.write("kvs-emulator: " + fmt % args + "\n")

    def send_error_json(self, status, error_type, message):
        body = json.dumps({"message": message, "__type": error_type}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("x-amz-ErrorType", error_type)
        self.send_header("x-amzn-ErrorType", error_type)
        self.send_header("x-amz-RequestId", os.urandom(8).hex())
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

    def send_json(self, doc, status=200):
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("x-amzn-RequestId", os.urandom(8).hex())
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def read_small_body(self):
        n = int(self.headers.get("Content-Length") or 0)
        if n > 1 << 20:
            raise ValueError("body too large")
        return self.rfile.read(n) if n else b""

    def do_GET(self):
        state = self.server.state
        m = re.match(r"^/_admin/streams/([^/]+)$", self.path)
        if m:
            s = state.stream(m.group(1), create=False)
            if s is None:
                return self.send_json({"message": "no such stream"}, 404)
            return self.send_json(s.write_index())
        self.send_error_json(404, "ResourceNotFoundException", "no such path")

    def do_POST(self):
        path = self.path.split("?")[0]
        if path.startswith("/_admin/"):
            return self.admin(path)
        if path == "/getDataEndpoint":
            return self.get_data_endpoint()
        if path == "/describeStream":
            return self.describe_stream()
        if path == "/putMedia":
            return self.put_media()
        self.send_error_json(404, "ResourceNotFoundException", f"unknown operation {path}")

    # -- admin

    def admin(self, path):
        state = self.server.state
        try:
            doc = json.loads(self.read_small_body() or b"{}")
        except ValueError:
            return self.send_json({"message": "body is not JSON"}, 400)
        if path == "/_admin/credentials":
            try:
                key = str(doc["access_key"])
                cred = {"secret_key": str(doc["secret_key"]),
                        "session_token": doc.get("session_token"),
                        "expires_ms": None if doc.get("expires_ms") is None else int(doc["expires_ms"])}
            except (KeyError, TypeError, ValueError):
                return self.send_json({"message": "access_key and secret_key are required"}, 400)
            with state.lock:
                state.credentials[key] = cred
            return self.send_json({"ok": True})
        m = re.match(r"^/_admin/streams/([^/]+)/(faults|delete|create|hold_acks|release_acks)$", path)
        if not m:
            return self.send_json({"message": "unknown admin path"}, 404)
        name, verb = m.groups()
        if verb == "create":
            retention = doc.get("retention_hours")
            with state.lock:
                state.deleted.discard(name)
            state.stream(name, create=True,
                         retention_hours=None if retention is None else int(retention))
            return self.send_json({"ok": True})
        s = state.stream(name, create=True)
        if verb == "delete":
            with state.lock:
                state.deleted.add(name)
                state.streams.pop(name, None)
            s.active = False
        elif verb == "faults":
            with s.lock:
                if "delay_acks_ms" in doc:
                    s.delay_acks_ms = int(doc["delay_acks_ms"])
                if "delay_persisted_ms" in doc:
                    s.delay_persisted_ms = int(doc["delay_persisted_ms"])
                for f in doc.get("faults", []):
                    f = dict(f)
                    f["seen"] = 0
                    s.faults.append(f)
        elif verb == "hold_acks":
            s.ack_hold = True
        elif verb == "release_acks":
            s.ack_hold = False
        self.send_json({"ok": True})

    # -- control plane

    def control_request(self):
        """Verifies a signed JSON control-plane request; returns (request doc, stream) or None
        after answering the error."""
        state = self.server.state
        body = self.read_small_body()
        err, _ = verify_sigv4(state, self, body)
        if err:
            self.send_error_json(401, "NotAuthorizedException", err)
            return None
        try:
            req = json.loads(body)
        except ValueError:
            self.send_error_json(400, "InvalidArgumentException", "body is not JSON")
            return None
        if not isinstance(req, dict):
            self.send_error_json(400, "InvalidArgumentException", "body is not a JSON object")
            return None
        return req

    def resolve(self, req):
        """The stream a control-plane request names, or None after answering 400/404."""
        name = self.stream_name(req.get("StreamName"), req.get("StreamARN"))
        if isinstance(name, tuple):
            self.send_error_json(400, "InvalidArgumentException", name[0])
            return None
        stream = self.server.state.stream(name)
        if stream is None:
            self.send_error_json(404, "ResourceNotFoundException", f"stream {name} not found")
        return stream

    def get_data_endpoint(self):
        state = self.server.state
        req = self.control_request()
        if req is None:
            return
        if req.get("APIName") not in API_NAMES:
            return self.send_error_json(400, "InvalidArgumentException", "invalid APIName")
        stream = self.resolve(req)
        if stream is None:
            return
        with stream.lock:
            stream.endpoint_calls += 1
        self.send_json({"DataEndpoint": f"http://127.0.0.1:{state.port}"})

    def describe_stream(self):
        state = self.server.state
        req = self.control_request()
        if req is None:
            return
        stream = self.resolve(req)
        if stream is None:
            return
        with stream.lock:
            stream.describe_calls += 1
            info = {
                "StreamName": stream.name,
                "StreamARN": stream.arn.format(region=state.args.region),
                "Status": "ACTIVE",
                "DataRetentionInHours": stream.retention_hours,
                "CreationTime": stream.creation_time,
                "Version": stream.version,
                "MediaType": "video/h264",
                "KmsKeyId": f"arn:aws:kms:{state.args.region}:{ACCOUNT}:alias/aws/kinesisvideo",
            }
        self.send_json({"StreamInfo": info})

    @staticmethod
    def stream_name(name, arn):
        if (name is None) == (arn is None):
            return ("exactly one of StreamName and StreamARN is required",)
        if not isinstance(name if name is not None else arn, str):
            return ("StreamName and StreamARN are strings",)
        if name is not None:
            if not STREAM_NAME_RE.match(name):
                return ("invalid StreamName",)
            return name
        m = STREAM_ARN_RE.match(arn) if len(arn) <= 1024 else None
        if not m:
            return ("invalid StreamARN",)
        return m.group(1)

    # -- PutMedia

    def put_media(self):
        state = self.server.state
        name = self.stream_name(self.headers.get("x-amzn-stream-name"),
                                self.headers.get("x-amzn-stream-arn"))
        # Refusals are logged on the named stream when it exists (never created by a refusal).
        known = None if isinstance(name, tuple) else state.stream(name, create=False)
        request = {
            "ms": wall_ms(),
            "status": None,
            "error": None,
            "message": None,
            "access_key": None,
            "session": None,
            "content_sha256": self.headers.get("x-amz-content-sha256"),
            "security_token": self.headers.get("X-Amz-Security-Token") is not None,
            "timecode_type": self.headers.get("x-amzn-fragment-timecode-type"),
            "producer_start_timestamp": self.headers.get("x-amzn-producer-start-timestamp"),
            "transfer_encoding": self.headers.get("Transfer-Encoding"),
        }

        def refuse(status, error_type, message):
            if known is not None:
                request.update(status=status, error=error_type, message=message)
                known.log_request(request)
            return self.send_error_json(status, error_type, message)

        te = self.headers.get("Transfer-Encoding", "").lower()
        chunked = te == "chunked"
        if te and not chunked:
            return refuse(400, "InvalidArgumentException", "unsupported Transfer-Encoding")
        err, access_key = verify_sigv4(state, self, None)
        request["access_key"] = access_key
        if err:
            return refuse(401, "NotAuthorizedException", err)
        if isinstance(name, tuple):
            return refuse(400, "InvalidArgumentException", name[0])
        tc_type = self.headers.get("x-amzn-fragment-timecode-type")
        if tc_type not in ("ABSOLUTE", "RELATIVE"):
            return refuse(400, "InvalidArgumentException",
                          "x-amzn-fragment-timecode-type must be ABSOLUTE or RELATIVE")
        start = self.headers.get("x-amzn-producer-start-timestamp")
        try:
            start_ms = round(float(start) * 1000) if start is not None else None
        except ValueError:
            return refuse(400, "InvalidArgumentException",
                          "x-amzn-producer-start-timestamp is not a number")
        if tc_type == "RELATIVE" and start_ms is None:
            return refuse(400, "InvalidArgumentException",
                          "RELATIVE needs x-amzn-producer-start-timestamp")
        stream = state.stream(name)
        if stream is None:
            return self.send_error_json(404, "ResourceNotFoundException", f"stream {name} not found")
        log = {
            "session": None, "opened_ms": wall_ms(), "closed_ms": None, "access_key": access_key,
            "fragments": 0, "eofr_tags": 0, "last_cluster_eofr": False, "body_end_ms": None,
            "last_ack_ms": None, "ended": None,
        }
        with stream.lock:
            stream.sessions += 1
            session_no = stream.sessions
            log["session"] = session_no
            request.update(status=200, session=session_no)
            stream.requests.append(request)
            stream.session_log.append(log)

        # The service answers 200 once the headers are valid, then acks as it reads.
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("x-amzn-RequestId", os.urandom(8).hex())
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.flush()
        self.close_connection = True
        self.connection.settimeout(state.args.idle_close_seconds)

        acks = AckWriter(self, stream, log, state.args.idle_ack_seconds)
        session = Session(state, stream, session_no, tc_type, start_ms, acks, log)
        body = Body(self.rfile, chunked, int(self.headers.get("Content-Length") or 0),
                    session.on_bytes, stream.count_bytes)
        expiry = Expiry(state, stream, access_key, session, self.connection)
        ended = "body_end"
        try:
            try:
                session.run(body)
            finally:
                log["body_end_ms"] = body.end_ms
            acks.finish()
        except AckError as e:
            ended = "dropped" if e.dropped else "error"
            if session.pending is not None and not session.expired and not e.dropped:
                # A complete fragment that an error after it ends the session is closed first,
                # as at the end of the body; should its own close fail, that error is answered.
                try:
                    session.close_pending("error")
                except AckError as own:
                    e = own
                    ended = "error"
            with stream.lock:
                stream.errors.append({"session": session_no, "error_id": e.error_id, "message": str(e)})
            if state.args.verbose:
                sys.stderr.write(f"kvs-emulator: {name}: {e}\n")
            ack = {"EventType": "ERROR", "ErrorId": e.error_id,
                   "ErrorCode": ERROR_NAMES.get(e.error_id, "UNKNOWN")}
            # An error inside a fragment names it, even when raised by the body reader.
            timecode = e.timecode if e.timecode is not None else session.current_tc
            if timecode is not None:
                ack["FragmentTimecode"] = timecode
                ack["FragmentNumber"] = state.next_fragment_number()
            acks.send(ack)
            acks.finish()
        except Cut:
            ended = "cut"
            acks.abort()
            try:
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        except socket.timeout:
            ended = "idle"
            acks.abort()
        except (ConnectionError, OSError):
            ended = "dropped"
            acks.abort()
        finally:
            expiry.cancel()
            with stream.lock:
                log["ended"] = "expired" if session.expired else ended
                log["closed_ms"] = wall_ms()
            stream.write_index()


class Expiry:
    """Ends a PutMedia session at the moment its signing credentials expire: no more acks, the
    connection closed. (The service refuses expired tokens; PIC rotates credentials 3 s before
    expiry, src/client/include/.../Include.h:310, so a correct client never meets this.)"""

    def __init__(self, state, stream, access_key, session, connection):
        self.state = state
        self.stream = stream
        self.access_key = access_key
        self.session = session
        self.connection = connection
        self.lock = threading.Lock()
        self.done = False
        self.timer = None
        self.arm()

    def arm(self):
        cred = self.state.credential(self.access_key)
        expires = None if cred is None else cred["expires_ms"]
        if expires is None:
            return
        with self.lock:
            if self.done:
                return
            self.timer = threading.Timer(max(0.0, (expires - wall_ms()) / 1000.0), self.fire)
            self.timer.daemon = True
            self.timer.start()

    def fire(self):
        cred = self.state.credential(self.access_key)
        # Registering the key again with a later expiry extends the session.
        if cred is not None and cred["expires_ms"] is not None and cred["expires_ms"] > wall_ms():
            return self.arm()
        with self.lock:
            if self.done:
                return
            self.done = True
            self.session.expired = True
        with self.stream.lock:
            self.stream.expired_sessions += 1
        self.session.acks.abort()
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def cancel(self):
        with self.lock:
            self.done = True
            if self.timer is not None:
                self.timer.cancel()


class AckWriter:
    """Writes ack lines as response chunks from its own thread, so delays never block reading.

    Each ack has a due time (now plus the delays armed on the stream) and is written when due, in
    due order, so a delayed PERSISTED never holds back later acks. finish() ends the response
    only after every queued ack has been written.
    """

    def __init__(self, handler, stream, log, idle_seconds):
        self.handler = handler
        self.stream = stream
        self.log = log
        self.cv = threading.Condition()
        self.heap = []
        self.seq = 0
        self.idle = idle_seconds
        self.last_data = time.monotonic()
        self.last_write = time.monotonic()
        self.alive = True
        self.finishing = False
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()

    def send(self, ack):
        delay_ms = self.stream.delay_acks_ms
        if ack["EventType"] == "PERSISTED":
            delay_ms += self.stream.delay_persisted_ms
        with self.cv:
            if not self.alive:
                return
            self.seq += 1
            heapq.heappush(self.heap, (time.monotonic() + delay_ms / 1000.0, self.seq, ack))
            self.cv.notify()

    def data_seen(self):
        self.last_data = time.monotonic()

    def write(self, payload):
        w = self.handler.wfile
        w.write(b"%x\r\n" % len(payload) + payload + b"\r\n")
        w.flush()
        self.last_write = time.monotonic()

    def written(self, ack):
        if ack["EventType"] in ("PERSISTED", "ERROR"):
            with self.stream.lock:
                self.log["last_ack_ms"] = wall_ms()
                if ack["EventType"] == "PERSISTED":
                    self.log["fragments"] += 1

    def loop(self):
        hold_since = None
        try:
            while True:
                with self.cv:
                    if not self.alive:
                        return
                    now = time.monotonic()
                    # Holding acks (a test control) waits with a bound, never forever.
                    if self.stream.ack_hold:
                        hold_since = now if hold_since is None else hold_since
                    else:
                        hold_since = None
                    held = hold_since is not None and now - hold_since < 60
                    ready = []
                    while not held and self.heap and self.heap[0][0] <= now:
                        ready.append(heapq.heappop(self.heap)[2])
                    end = not ready and not self.heap and self.finishing
                    idle_due = max(self.last_data, self.last_write) + self.idle
                    idle = not ready and not end and not self.finishing and now >= idle_due
                    if not ready and not end and not idle:
                        waits = [idle_due - now] if not self.finishing else []
                        if held:
                            waits.append(0.01)
                        elif self.heap:
                            waits.append(self.heap[0][0] - now)
                        self.cv.wait(timeout=max(0.001, min(waits)) if waits else None)
                        continue
                for ack in ready:
                    self.write(json.dumps(ack, separators=(",", ":")).encode() + b"\n")
                    self.written(ack)
                if idle:
                    self.write(b'{"EventType":"IDLE"}\n')
                if end:
                    self.write(b"")  # the terminating zero-length chunk
                    return
        except OSError:
            return

    def finish(self):
        with self.cv:
            self.finishing = True
            self.cv.notify()
        self.thread.join(timeout=600)

    def abort(self):
        with self.cv:
            self.alive = False
            self.cv.notify()


class Session:
    """One PutMedia request: parses the body and emits acks."""

    def __init__(self, state, stream, number, tc_type, start_ms, acks, log):
        self.state = state
        self.stream = stream
        self.number = number
        self.tc_type = tc_type
        self.start_ms = start_ms
        self.acks = acks
        self.log = log
        self.opened = time.monotonic()
        self.scale_ns = 1_000_000
        self.tracks = None
        self.header = b""
        self.tracks_key = None
        self.prev_max_ms = None
        self.current_tc = None
        self.cut_at_byte = None
        # The complete, validated fragment not yet closed (acked), if any.
        self.pending = None
        self.expired = False
        with stream.lock:
            for f in stream.faults:
                if f.get("kind") == "cut_after_bytes" and not f.get("done"):
                    f["done"] = True
                    self.cut_at_byte = int(f["bytes"])

    def on_bytes(self, pos):
        self.acks.data_seen()
        if self.cut_at_byte is not None and pos >= self.cut_at_byte:
            raise Cut()

    def take_fault(self, kinds):
        """Counts this fragment against the armed faults; returns the one that fires, if any."""
        with self.stream.lock:
            for f in self.stream.faults:
                if f.get("done") or f.get("kind") not in kinds:
                    continue
                if f["seen"] == int(f.get("at_fragment", 0)):
                    f["done"] = True
                    f["seen"] += 1
                    return f
                f["seen"] += 1
        return None

    def to_ms(self, tc):
        return tc * self.scale_ns // 1_000_000

    def run(self, body):
        """Reads the whole body; the last fragment is closed when the body ends."""
        self.read_segment(body)
        self.close_pending("body_end")

    def close_pending(self, reason):
        """Closes the open fragment: RECEIVED, stored, then PERSISTED (unless retention is 0)."""
        p = self.pending
        if p is None:
            return
        self.pending = None
        stream = self.stream
        timecode, number, entry = p["timecode"], p["number"], p["entry"]
        fail = self.take_fault({"error"})
        if fail is not None:
            raise AckError(int(fail["error_id"]), "injected fault", timecode)
        if not stream.active:
            raise AckError(4008, "stream deleted", timecode)
        # Seed, PutMedia: "Persisted [...] if you configured the stream to persist the data".
        persisted = stream.retention_hours > 0
        entry.update(closed_ms=wall_ms(), closed_by=reason, persisted=persisted)
        self.acks.send({"EventType": "RECEIVED", "FragmentTimecode": timecode,
                        "FragmentNumber": number})
        stream.persist(self.header, self.tracks_key, p["cluster"], entry)
        if persisted:
            self.acks.send({"EventType": "PERSISTED", "FragmentTimecode": timecode,
                            "FragmentNumber": number})

    def read_segment(self, body):
        header = bytearray()
        body.capture = header
        try:
            eid, size = read_element_header(body)
        except BodyEnd:
            return
        if eid != EBML or size is None or size > MAX_HEADER_ELEMENT:
            raise AckError(4006, "the body does not start with an EBML header")
        parse_ebml_header(body.read(size))
        eid, seg_size = read_element_header(body)
        if eid != SEGMENT:
            raise AckError(4006, f"expected a Segment, found {eid:#x}")
        seg_end = None if seg_size is None else body.pos + seg_size
        seen_info = False
        seen_cluster = False
        while True:
            if seg_end is not None and body.pos >= seg_end:
                if body.pos > seg_end:
                    raise AckError(4006, "element overruns the Segment")
                if not body.at_end():
                    raise AckError(4006, "data after the Segment (only one Segment is allowed)")
                return
            # Capture each element's raw bytes: header elements go to the stored MKV header,
            # clusters to the stored fragments.
            element = bytearray()
            body.capture = element
            try:
                eid, size = read_element_header(body)
            except BodyEnd:
                return
            if eid == CLUSTER:
                if self.tracks is None:
                    raise AckError(4006, "Cluster before Tracks")
                seen_cluster = True
                self.close_pending("next_cluster")
                self.log["last_cluster_eofr"] = False
                self.cluster(body, size, element)
                continue
            if size is None:
                raise AckError(4006, f"unknown-size element {eid:#x} in the Segment")
            if eid in (EBML, SEGMENT):
                raise AckError(4006, "a second EBML header or Segment: one Segment per request")
            if eid == INFO:
                if seen_info or seen_cluster:
                    raise AckError(4006, "Info repeated or after a Cluster")
                seen_info = True
                if size > MAX_HEADER_ELEMENT:
                    raise AckError(4006, "Info too large")
                for cid, v in children(body.read(size)):
                    if cid == TIMECODE_SCALE:
                        self.scale_ns = uint(v) or 1_000_000
                header += element
            elif eid == TRACKS:
                if self.tracks is not None or seen_cluster:
                    raise AckError(4006, "Tracks repeated or after a Cluster")
                if size > MAX_HEADER_ELEMENT + MAX_CODEC_PRIVATE:
                    raise AckError(4006, "Tracks too large")
                raw = body.read(size)
                self.tracks = parse_tracks(raw)
                self.tracks_key = hashlib.sha256(raw).hexdigest()
                header += element
                self.header = bytes(header)
            elif eid == TAGS:
                body.capture = None
                if size > MAX_HEADER_ELEMENT:
                    raise AckError(4006, "Tags too large")
                if has_end_of_fragment(body.read(size)):
                    with self.stream.lock:
                        self.log["eofr_tags"] += 1
                    # PIC never sends two in a row; one with no open fragment closes nothing.
                    if self.pending is not None:
                        self.log["last_cluster_eofr"] = True
                        self.close_pending("eofr")
            elif eid in SKIPPED_IN_SEGMENT:
                body.capture = None
                skip(body, size)
            else:
                raise AckError(4006, f"element {eid:#x} is not allowed in a Segment")

    def cluster(self, body, size, raw):
        stream = self.stream
        state = self.state
        if not stream.active:
            raise AckError(4008, "stream deleted")
        if time.monotonic() - self.opened > state.args.max_connection_seconds:
            raise AckError(4003, "connection older than the maximum duration")
        if size is not None and size > MAX_FRAGMENT_BYTES:
            raise AckError(4001, f"cluster of {size} bytes")
        # Raw cluster bytes, as stored: its header as received, then the children.
        body.capture = raw
        start = body.pos
        end = None if size is None else start + size
        cut = self.take_fault({"cut_mid_fragment"})
        cut_after = None
        if cut is not None:
            cut_after = start + max(1, (size or 2000) // 2)
        timecode = None
        frames = {}
        min_ms = max_ms = None
        first_block = True
        number = None
        while True:
            if end is not None and body.pos >= end:
                if body.pos > end:
                    raise AckError(4006, "element overruns its Cluster", timecode)
                break
            if end is None:
                nxt = body.peek(4)
                if not nxt or int.from_bytes(nxt, "big") in TOP_LEVEL:
                    break
            if cut_after is not None and body.pos >= cut_after:
                raise Cut()
            try:
                cid, csize = read_element_header(body)
            except BodyEnd:
                raise AckError(4000, "body ended inside a Cluster", timecode)
            if csize is None:
                raise AckError(4006, "unknown-size element inside a Cluster", timecode)
            if body.pos - start > MAX_FRAGMENT_BYTES or csize > MAX_FRAGMENT_BYTES:
                raise AckError(4001, "fragment over 50 MB", timecode)
            if cid == TIMECODE:
                if timecode is not None:
                    raise AckError(4006, "two Timecodes in a Cluster", timecode)
                timecode = uint(body.read(csize))
                self.current_tc = timecode
                started = time.monotonic()
                number = state.next_fragment_number()
                self.acks.send({"EventType": "BUFFERING", "FragmentTimecode": timecode,
                                "FragmentNumber": number})
                continue
            if cid in (SIMPLE_BLOCK, BLOCK_GROUP):
                if timecode is None:
                    raise AckError(4006, "block before the Cluster Timecode")
                if cut_after is not None and body.pos + csize > cut_after:
                    body.read(max(0, cut_after - body.pos))
                    raise Cut()
                data = body.read(csize)
                if cid == SIMPLE_BLOCK:
                    track, rel, key = parse_block(data, True)
                else:
                    track, rel, key = parse_block_group(data)
                if track not in self.tracks:
                    raise AckError(4010, f"block on undeclared track {track}", timecode)
                if first_block and self.tracks[track]["type"] == 1 and not key:
                    raise AckError(4006, "the first frame of the fragment is not a key frame", timecode)
                first_block = False
                ms = self.to_ms(timecode + rel)
                min_ms = ms if min_ms is None else min(min_ms, ms)
                max_ms = ms if max_ms is None else max(max_ms, ms)
                frames[track] = frames.get(track, 0) + 1
                continue
            if cid in (VOID, CRC32, POSITION, PREV_SIZE, SILENT_TRACKS):
                skip(body, csize)
                continue
            raise AckError(4006, f"element {cid:#x} is not allowed in a Cluster", timecode)
        if timecode is None:
            raise AckError(4006, "Cluster without Timecode")
        missing = [t for t in self.tracks if t not in frames]
        if missing:
            raise AckError(4011, f"no frames for tracks {missing}", timecode)
        if max_ms - min_ms > MAX_FRAGMENT_DURATION_MS:
            raise AckError(4002, f"fragment spans {max_ms - min_ms} ms", timecode)
        if self.prev_max_ms is not None and min_ms <= self.prev_max_ms:
            raise AckError(4004, f"earliest frame {min_ms} not after the previous fragment's "
                                 f"latest {self.prev_max_ms}", timecode)
        tc_ms = self.to_ms(timecode)
        producer_ms = tc_ms if self.tc_type == "ABSOLUTE" else self.start_ms + tc_ms
        if self.start_ms is not None and producer_ms < self.start_ms:
            raise AckError(4007, f"producer timestamp {producer_ms} before the producer start "
                                 f"timestamp {self.start_ms}", timecode)
        if producer_ms > time.time() * 1000 + FUTURE_SLACK_MS:
            raise AckError(4007, f"producer timestamp {producer_ms} is in the future", timecode)
        self.prev_max_ms = max_ms
        cluster = bytes(body.capture)
        body.capture = None
        entry = {
            "fragment_number": number,
            "timecode": timecode,
            "producer_timestamp_ms": producer_ms,
            "server_timestamp_ms": int(time.time() * 1000),
            "server_monotonic": time.monotonic(),
            "server_start_monotonic": started,
            "received_ms": body.arrival_ms(body.pos),
            "size": len(cluster),
            "frames": sum(frames.values()),
            "duration_ms": max_ms - min_ms,
            "sha256": hashlib.sha256(cluster).hexdigest(),
            "session": self.number,
        }
        # Acked only once closed: by the next Cluster, an end-of-fragment tag or the body's end.
        self.pending = {"timecode": timecode, "number": number, "cluster": cluster, "entry": entry}
        self.current_tc = None


def parse_block_group(data):
    """A BlockGroup's Block; it is a key frame when it references no other block."""
    block = None
    key = True
    for cid, v in children(data):
        if cid == BLOCK:
            block = v
        elif cid == REFERENCE_BLOCK:
            key = False
    if block is None:
        raise AckError(4006, "BlockGroup without a Block")
    track, rel, _ = parse_block(block, False)
    return track, rel, key


def skip(body, size):
    left = size
    while left > 0:
        n = min(left, 1 << 16)
        body.read(n)
        left -= n


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # The default backlog of 5 drops SYNs when many streams connect at once (a 1 s stall).
    request_queue_size = 128


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--access-key", default=os.environ.get("AWS_ACCESS_KEY_ID", "AKIDKVSEMULATOR"))
    p.add_argument("--secret-key", default=os.environ.get("AWS_SECRET_ACCESS_KEY", "emulator-secret"))
    p.add_argument("--region", default=os.environ.get("AWS_REGION", "us-east-1"))
    p.add_argument("--no-auto-create", dest="auto_create", action="store_false",
                   help="only streams created through /_admin/streams/NAME/create exist")
    p.add_argument("--idle-ack-seconds", type=float, default=3.0)
    p.add_argument("--idle-close-seconds", type=float, default=30.0)
    p.add_argument("--max-connection-seconds", type=float, default=45 * 60)
    p.add_argument("--default-retention-hours", type=int, default=24,
                   help="DataRetentionInHours of streams not created with retention_hours")
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args()
    os.makedirs(args.data_dir, exist_ok=True)
    state = State(args)
    server = Server(("127.0.0.1", args.port), Handler)
    server.state = state
    state.port = server.server_address[1]
    print(f"KVS_EMULATOR_PORT={state.port}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
