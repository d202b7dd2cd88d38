#!/usr/bin/env python3
"""A strict stand-in for the Greengrass nucleus' IPC server, for GetSecretValue only.

No nucleus can be installed here, so this fake follows the real server's code:
- framing and RPC rules of aws-c-event-stream's RPC server (event_stream_rpc_server.c): the
  int32 headers :message-type, :message-flags and :stream-id on every message, CONNECT first and
  only once, new streams numbered consecutively from 1 and opened with an `operation` header,
  PROTOCOL_ERROR (stream 0, then the connection is closed) for anything else;
- the handshake of ServiceOperationMappingContinuationHandler (aws-iot-device-sdk-java-v2's
  eventstream RPC server, which the nucleus runs): :version must be "0.1.0" and the JSON payload's
  authToken must be the component's SVCUID, else CONNECT_ACK without CONNECTION_ACCEPTED and the
  connection is closed; an unknown operation gets an APPLICATION_ERROR without
  service-model-type, payload {"error": "Unsupported Operation", ...};
- OperationContinuationHandler: a request payload that is not a JSON object gets an
  APPLICATION_ERROR text/plain "InternalServerError"; modelled errors carry service-model-type;
  every answer ends the stream (TERMINATE_STREAM);
- SecretManagerService.handleIPCRequest (aws-greengrass-secret-manager): UnauthorizedError,
  ResourceNotFoundError (resourceType "secret"), ServiceError for a missing secretId.

Stricter than the nucleus in one point: the request must carry :content-type application/json
and service-model-type aws.greengrass#GetSecretValueRequest (the SDKs always send both; the
self-test proves the real Python client does), else InternalServerError.

Usage: server.py --socket PATH --token SVCUID --secrets FILE [--record FILE] [--no-secret-manager]
The secrets file is JSON: {"secrets": {ID: VALUE}, "unauthorized": [ID, ...]} where VALUE is the
secret string, or {"secretBinary": BASE64}, or {"misbehave": MODE} to answer requests for that
ID with a broken reply (see MISBEHAVIOURS). The file is read at each request. --record appends
each message received, as a JSON line of its headers and payload, so that what two clients send
can be compared. Prints
"listening PATH" on stdout once it accepts connections; runs until killed.
"""

import argparse
import json
import os
import socket
import socketserver
import struct
import sys
import zlib

VERSION = "0.1.0"
GET_SECRET_VALUE = "aws.greengrass#GetSecretValue"
REQUEST_MODEL = "aws.greengrass#GetSecretValueRequest"
RESPONSE_MODEL = "aws.greengrass#GetSecretValueResponse"

APPLICATION_MESSAGE, APPLICATION_ERROR, PING, PING_RESPONSE = 0, 1, 2, 3
CONNECT, CONNECT_ACK, PROTOCOL_ERROR, INTERNAL_ERROR = 4, 5, 6, 7
MESSAGE_TYPE_COUNT = 8
CONNECTION_ACCEPTED, TERMINATE_STREAM = 1, 2
MAX_MESSAGE = 16 * 1024 * 1024  # aws-c-event-stream's AWS_EVENT_STREAM_MAX_MESSAGE_SIZE

MISBEHAVIOURS = {
    "garbage": "bytes that are no frame",
    "bad-crc": "a response frame whose message CRC is wrong",
    "huge": "a prelude announcing a 2 GiB frame, then nothing",
    "no-model": "a response without service-model-type",
    "bad-json": "a GetSecretValueResponse whose payload is cut-off JSON",
    "wrong-stream": "the response on stream 7",
    "close": "the connection closed without an answer",
    "silent": "no answer at all (the connection stays open)",
}


# --- eventstream frames ---------------------------------------------------------------------------

class FrameError(Exception):
    pass


def encode_header(name, value):
    n = name.encode()
    out = struct.pack(">B", len(n)) + n
    if isinstance(value, bool):
        return out + struct.pack(">B", 0 if value else 1)
    if isinstance(value, int):
        return out + struct.pack(">Bi", 4, value)
    if isinstance(value, bytes):
        return out + struct.pack(">BH", 6, len(value)) + value
    v = value.encode()
    return out + struct.pack(">BH", 7, len(v)) + v


def encode(headers, payload=b"", corrupt_crc=False):
    """A frame: headers is a list of (name, value); str values are strings, int are int32."""
    hb = b"".join(encode_header(n, v) for n, v in headers)
    total = 12 + len(hb) + len(payload) + 4
    prelude = struct.pack(">II", total, len(hb))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    body = prelude + hb + payload
    crc = zlib.crc32(body) ^ (1 if corrupt_crc else 0)
    return body + struct.pack(">I", crc)


def decode_headers(data):
    headers = []
    i = 0
    while i < len(data):
        if i + 2 > len(data):
            raise FrameError("truncated header")
        nlen = data[i]
        name = data[i + 1:i + 1 + nlen].decode()
        i += 1 + nlen
        if i >= len(data):
            raise FrameError("truncated header")
        t = data[i]
        i += 1
        fixed = {2: (">b", 1), 3: (">h", 2), 4: (">i", 4), 5: (">q", 8), 8: (">q", 8)}
        if t in (0, 1):
            value = t == 0
        elif t in fixed:
            fmt, size = fixed[t]
            if i + size > len(data):
                raise FrameError("truncated header value")
            value = struct.unpack(fmt, data[i:i + size])[0]
            i += size
            if t == 8:
                value = ("timestamp", value)
        elif t in (6, 7):
            if i + 2 > len(data):
                raise FrameError("truncated header value")
            (vlen,) = struct.unpack(">H", data[i:i + 2])
            i += 2
            if i + vlen > len(data):
                raise FrameError("truncated header value")
            raw = data[i:i + vlen]
            i += vlen
            value = raw.decode() if t == 7 else raw
        elif t == 9:
            if i + 16 > len(data):
                raise FrameError("truncated header value")
            value = ("uuid", data[i:i + 16])
            i += 16
        else:
            raise FrameError("unknown header type %d" % t)
        headers.append((name, t, value))
    return headers


def read_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def read_frame(sock):
    """(headers, payload), None at a clean end of stream; FrameError for a bad frame."""
    prelude = read_exact(sock, 12)
    if prelude is None:
        return None
    total, hlen, pcrc = struct.unpack(">III", prelude)
    if zlib.crc32(prelude[:8]) != pcrc:
        raise FrameError("prelude CRC mismatch")
    if total < 16 or total > MAX_MESSAGE or hlen > total - 16:
        raise FrameError("bad lengths")
    rest = read_exact(sock, total - 12)
    if rest is None:
        raise FrameError("truncated frame")
    body, (mcrc,) = prelude + rest[:-4], struct.unpack(">I", rest[-4:])
    if zlib.crc32(body) != mcrc:
        raise FrameError("message CRC mismatch")
    return decode_headers(body[12:12 + hlen]), body[12 + hlen:]


def header(headers, name, type_):
    """aws-c-event-stream matches names case-insensitively and by type."""
    for n, t, v in headers:
        if n.lower() == name.lower() and t == type_:
            return v
    return None


# --- the RPC server -------------------------------------------------------------------------------

INVALID_MESSAGE = ('{ "message": "A message was received with missing required fields. Check that '
                   'your client is sending at least, :message-type, :message-flags, and :stream-id" }')
CONNECT_NOT_COMPLETED = ('{ "message": "A CONNECT message must be received, and the CONNECT_ACK must '
                         'be sent in response, before any other message-types can be sent on this '
                         'connection. In addition, only one CONNECT message is allowed on a '
                         'connection." }')
INVALID_STREAM_ID = ('{ "message": "non-zero stream-id field is only allowed for messages of type '
                     'APPLICATION_MESSAGE. The stream id max value is INT32_MAX." }')
INVALID_NEW_STREAM_ID = ('{ "message": "stream-id values must be monotonically incrementing. A new '
                         'stream-id arrived that was incremented by more than 1." }')
INVALID_OLD_STREAM_ID = ('{ "message": "stream-id values must be monotonically incrementing. A '
                         'stream-id arrived that was lower than the last seen stream-id." }')
INVALID_MESSAGE_TYPE = '{ "message": "an invalid value for message-type field was received." }'
MISSING_OPERATION = '{ "message": "A new stream was created without an operation name." }'


class Closed(Exception):
    """The connection is to be closed (after what was sent)."""


class Handler(socketserver.BaseRequestHandler):
    def setup(self):
        self.connected = False
        self.latest_stream = 0
        self.open_streams = set()

    def log(self, *args):
        print("fake-nucleus:", *args, file=sys.stderr, flush=True)

    def send(self, message_type, flags, stream_id, headers=(), payload=b"", corrupt_crc=False):
        rpc = [(":message-type", message_type), (":message-flags", flags),
               (":stream-id", stream_id)]
        self.request.sendall(encode(list(headers) + rpc, payload, corrupt_crc))

    def record(self, headers, payload):
        if not self.server.record:
            return
        line = {"headers": sorted([n, t, v if isinstance(v, (int, str)) else repr(v)]
                                  for n, t, v in headers),
                "payload": payload.decode(errors="replace")}
        with open(self.server.record, "a") as f:
            f.write(json.dumps(line) + "\n")

    def protocol_error(self, payload):
        self.send(PROTOCOL_ERROR, 0, 0, [(":content-type", "application/json")], payload.encode())
        raise Closed()

    def handle(self):
        try:
            while True:
                try:
                    frame = read_frame(self.request)
                except FrameError as e:
                    self.log("bad frame:", e)
                    return
                if frame is None:
                    return
                self.record(*frame)
                self.route(*frame)
        except (Closed, BrokenPipeError, ConnectionResetError):
            return

    def route(self, headers, payload):
        message_type = header(headers, ":message-type", 4)
        flags = header(headers, ":message-flags", 4)
        stream_id = header(headers, ":stream-id", 4)
        if message_type is None or flags is None or stream_id is None:
            self.protocol_error(INVALID_MESSAGE)
        if not self.connected and message_type != CONNECT:
            self.protocol_error(CONNECT_NOT_COMPLETED)
        if stream_id > 0:
            if message_type > APPLICATION_ERROR:
                self.protocol_error(INVALID_STREAM_ID)
            if stream_id <= self.latest_stream:
                if stream_id not in self.open_streams:
                    self.protocol_error(INVALID_OLD_STREAM_ID)
                # A client may end its stream (the SDK does after an error answer): nothing to do.
                if flags & TERMINATE_STREAM:
                    self.open_streams.discard(stream_id)
                return
            if stream_id != self.latest_stream + 1:
                self.protocol_error(INVALID_NEW_STREAM_ID)
            operation = header(headers, "operation", 7)
            if not operation:
                self.protocol_error(MISSING_OPERATION)
            self.latest_stream = stream_id
            self.open_streams.add(stream_id)
            self.operation(stream_id, operation, headers, payload, flags)
            return
        if message_type <= APPLICATION_ERROR or message_type >= MESSAGE_TYPE_COUNT or stream_id < 0:
            self.protocol_error(INVALID_MESSAGE_TYPE)
        if message_type == CONNECT:
            if self.connected:
                self.protocol_error(CONNECT_NOT_COMPLETED)
            self.connect(headers, payload)
        elif message_type == PING:
            self.send(PING_RESPONSE, 0, 0, [(n, v) for n, t, v in headers
                                           if not n.startswith(":") and t in (4, 7)], payload)
        elif message_type != PING_RESPONSE:
            self.send(INTERNAL_ERROR, 0, 0, [(":content-type", "application/json")],
                      b'{ "error": "Unrecognized Message Type" }')
            raise Closed()

    def connect(self, headers, payload):
        accepted = False
        if header(headers, ":version", 7) == VERSION:
            try:
                token = json.loads(payload.decode()).get("authToken")
            except (ValueError, AttributeError, UnicodeDecodeError):
                token = None
            accepted = token == self.server.token
        self.log("CONNECT", "accepted" if accepted else "rejected")
        self.send(CONNECT_ACK, CONNECTION_ACCEPTED if accepted else 0, 0)
        if not accepted:
            raise Closed()
        self.connected = True

    def end(self, stream_id, message_type, headers, payload):
        self.send(message_type, TERMINATE_STREAM, stream_id, headers, payload)
        self.open_streams.discard(stream_id)

    def modelled_error(self, stream_id, model, body):
        self.end(stream_id, APPLICATION_ERROR,
                 [(":content-type", "application/json"), ("service-model-type", model)],
                 json.dumps(body).encode())

    def internal_server_error(self, stream_id):
        self.end(stream_id, APPLICATION_ERROR, [(":content-type", "text/plain")],
                 b"InternalServerError")

    def operation(self, stream_id, operation, headers, payload, flags):
        if operation != GET_SECRET_VALUE or not self.server.secret_manager:
            self.log("unsupported operation", operation)
            body = ('{ "error": "Unsupported Operation", "message": "%s is an unsupported '
                    'operation." }' % operation)
            self.end(stream_id, APPLICATION_ERROR, [(":content-type", "application/json")],
                     body.encode())
            return
        if flags & TERMINATE_STREAM:
            # OperationContinuationHandler: a request that ends its own stream is not run.
            self.open_streams.discard(stream_id)
            return
        if (header(headers, ":content-type", 7) != "application/json"
                or header(headers, "service-model-type", 7) != REQUEST_MODEL):
            self.log("request without the SDK's content type or model type")
            self.internal_server_error(stream_id)
            return
        try:
            request = json.loads(payload.decode())
        except (ValueError, UnicodeDecodeError):
            request = None
        if not isinstance(request, dict):
            self.log("request payload is not a JSON object")
            self.internal_server_error(stream_id)
            return
        secret_id = request.get("secretId")
        if not isinstance(secret_id, str) or not secret_id:
            self.modelled_error(stream_id, "aws.greengrass#ServiceError",
                                {"message": "SecretId absent in the request"})
            return
        with open(self.server.secrets_file) as f:
            store = json.load(f)
        self.log("GetSecretValue", secret_id)
        if secret_id in store.get("unauthorized", []):
            self.modelled_error(stream_id, "aws.greengrass#UnauthorizedError", {
                "message": "Principal %s is not authorized to perform "
                           "aws.greengrass.SecretManager:getsecret on resource %s"
                           % (self.server.component, secret_id)})
            return
        secrets = store.get("secrets", {})
        if secret_id not in secrets:
            self.modelled_error(stream_id, "aws.greengrass#ResourceNotFoundError", {
                "message": "Secret not found " + secret_id, "resourceType": "secret"})
            return
        value = secrets[secret_id]
        if isinstance(value, dict) and "misbehave" in value:
            self.misbehave(stream_id, value["misbehave"])
            return
        secret_value = value if isinstance(value, dict) else {"secretString": value}
        self.end(stream_id, APPLICATION_MESSAGE,
                 [(":content-type", "application/json"), ("service-model-type", RESPONSE_MODEL)],
                 json.dumps({"secretId": secret_id, "versionId": "v1",
                             "versionStage": ["AWSCURRENT"],
                             "secretValue": secret_value}).encode())

    def misbehave(self, stream_id, mode):
        self.log("misbehaving:", mode)
        leak = json.dumps({"secretValue": {"secretString":
                                           '{"MediaURI": "rtsp://admin:hunter2@10.0.0.9/x"}'}})
        ok_headers = [(":content-type", "application/json"), ("service-model-type", RESPONSE_MODEL)]
        if mode == "garbage":
            self.request.sendall(b"\x00\x00\x00\x20hunter2 is not a frame at all!!!")
        elif mode == "bad-crc":
            self.send(APPLICATION_MESSAGE, TERMINATE_STREAM, stream_id, ok_headers, leak.encode(),
                      corrupt_crc=True)
        elif mode == "huge":
            self.request.sendall(struct.pack(">I", 0x80000000) + b"hunter2")
        elif mode == "no-model":
            self.end(stream_id, APPLICATION_MESSAGE, [(":content-type", "application/json")],
                     leak.encode())
        elif mode == "bad-json":
            self.end(stream_id, APPLICATION_MESSAGE, ok_headers, leak.encode()[:-12])
        elif mode == "wrong-stream":
            self.send(APPLICATION_MESSAGE, TERMINATE_STREAM, 7, ok_headers, leak.encode())
        elif mode == "close":
            raise Closed()
        elif mode == "silent":
            # Keep the connection open until the client gives up.
            while self.request.recv(4096):
                pass
        else:
            raise ValueError("unknown misbehaviour " + mode)
        if mode not in ("bad-json", "no-model"):
            raise Closed()


class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--socket", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--secrets", required=True)
    parser.add_argument("--component", default="aws.kinesisvideo.EdgeAgent")
    parser.add_argument("--record")
    parser.add_argument("--no-secret-manager", action="store_true",
                        help="a nucleus without aws.greengrass.SecretManager: GetSecretValue is "
                             "an unsupported operation")
    args = parser.parse_args()
    if os.path.exists(args.socket):
        os.unlink(args.socket)
    server = Server(args.socket, Handler)
    server.token = args.token
    server.secrets_file = args.secrets
    server.component = args.component
    server.record = args.record
    server.secret_manager = not args.no_secret_manager
    print("listening", args.socket, flush=True)
    try:
        server.serve_forever()
    finally:
        os.unlink(args.socket)


if __name__ == "__main__":
    main()
