#!/usr/bin/env python3
"""Self-test of the fake Greengrass nucleus (server.py) against the REAL client: the AWS IoT Device
SDK v2 for Python (`awsiotsdk`, whose GreengrassCoreIPCClientV2 runs aws-c-event-stream's RPC
client through awscrt). The fake must accept what the real client sends and answer what it
understands, and reject what the nucleus rejects. Run: python3 tests/greengrass_ipc/test_server.py
(agent/tests/greengrass_ipc.rs runs it too).
"""

import json
import os
import socket
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import server as fake  # noqa: E402

from awsiot import greengrasscoreipc  # noqa: E402
from awscrt.exceptions import AwsCrtError  # noqa: E402
from awsiot.eventstreamrpc import AccessDeniedError, StreamClosedError  # noqa: E402
from awsiot.greengrasscoreipc import model  # noqa: E402
from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2  # noqa: E402

TOKEN = "svcuid-self-test"
GOOD = "arn:aws:secretsmanager:us-east-1:123456789012:secret:front-door-AbCdEf"
BINARY = "arn:aws:secretsmanager:us-east-1:123456789012:secret:binary-AbCdEf"
DENIED = "arn:aws:secretsmanager:us-east-1:123456789012:secret:denied-AbCdEf"
MISSING = "arn:aws:secretsmanager:us-east-1:123456789012:secret:missing-AbCdEf"
VALUE = '{"MediaURI": "rtsp://admin:hunter2@10.0.0.2/live"}'


class FakeNucleusTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.TemporaryDirectory()
        cls.socket = os.path.join(cls.dir.name, "ipc.socket")
        cls.record = os.path.join(cls.dir.name, "record.jsonl")
        secrets = os.path.join(cls.dir.name, "secrets.json")
        with open(secrets, "w") as f:
            json.dump({"secrets": {GOOD: VALUE, DENIED: VALUE,
                                   BINARY: {"secretBinary": "AAEC"}},
                       "unauthorized": [DENIED]}, f)
        cls.proc = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "server.py"), "--socket", cls.socket,
             "--token", TOKEN, "--secrets", secrets, "--record", cls.record],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = cls.proc.stdout.readline()
        assert line.startswith("listening"), line

    @classmethod
    def tearDownClass(cls):
        cls.proc.kill()
        cls.proc.wait()
        cls.dir.cleanup()

    def client(self, token=TOKEN):
        return GreengrassCoreIPCClientV2(client=greengrasscoreipc.connect(
            ipc_socket=self.socket, authtoken=token, timeout=5))

    def test_real_client_gets_a_secret_the_way_a_component_does(self):
        # As a component: the socket and the token from the nucleus' environment variables.
        os.environ["AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT"] = self.socket
        os.environ["SVCUID"] = TOKEN
        try:
            client = GreengrassCoreIPCClientV2()
        finally:
            del os.environ["AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT"]
            del os.environ["SVCUID"]
        try:
            r = client.get_secret_value(secret_id=GOOD)
            self.assertEqual(r.secret_id, GOOD)
            self.assertEqual(r.secret_value.secret_string, VALUE)
            self.assertEqual(r.version_stage, ["AWSCURRENT"])
            # Several requests on one connection: streams 2, 3, ...
            r = client.get_secret_value(secret_id=BINARY)
            self.assertEqual(r.secret_value.secret_binary, b"\x00\x01\x02")
            r = client.get_secret_value(secret_id=GOOD, refresh=False)
            self.assertEqual(r.secret_value.secret_string, VALUE)
        finally:
            client.close()

    def test_real_client_gets_the_modelled_errors(self):
        client = self.client()
        try:
            with self.assertRaises(model.ResourceNotFoundError) as e:
                client.get_secret_value(secret_id=MISSING)
            self.assertEqual(e.exception.resource_type, "secret")
            with self.assertRaises(model.UnauthorizedError) as e:
                client.get_secret_value(secret_id=DENIED)
            self.assertIn(DENIED, e.exception.message)
            with self.assertRaises(model.ServiceError):
                client.get_secret_value()
            # The connection is still usable after errors.
            r = client.get_secret_value(secret_id=GOOD)
            self.assertEqual(r.secret_value.secret_string, VALUE)
        finally:
            client.close()

    def test_an_unsupported_operation_is_what_the_nucleus_answers(self):
        # The nucleus answers an operation it has no handler for with an APPLICATION_ERROR that
        # ends the stream and has no service-model-type, which the SDK takes for an empty end of
        # stream: the call fails with StreamClosedError.
        client = self.client()
        try:
            with self.assertRaises(StreamClosedError):
                client.get_thing_shadow(thing_name="t")
            r = client.get_secret_value(secret_id=GOOD)
            self.assertEqual(r.secret_value.secret_string, VALUE)
        finally:
            client.close()
        s = self.connected()
        self.request(s, 1, b"{}", model_type="aws.greengrass#GetThingShadowRequest",
                     operation="aws.greengrass#GetThingShadow")
        kind, flags, sid, headers, body = self.recv(s)
        self.assertEqual((kind, flags, sid), (fake.APPLICATION_ERROR, fake.TERMINATE_STREAM, 1))
        self.assertIsNone(fake.header(headers, "service-model-type", 7))
        self.assertEqual(json.loads(body)["error"], "Unsupported Operation")
        s.close()

    def test_a_wrong_token_is_rejected(self):
        # The nucleus closes the connection right after its CONNECT_ACK, so the SDK reports
        # either the refusal or the closed socket, whichever it handles first.
        with self.assertRaises((AccessDeniedError, AwsCrtError)):
            self.client(token="not-the-svcuid")
        s = self.raw()
        self.send(s, fake.CONNECT, 0, 0, [(":version", "0.1.0")],
                  json.dumps({"authToken": "not-the-svcuid"}).encode())
        self.assertEqual(self.recv(s)[:3], (fake.CONNECT_ACK, 0, 0))
        self.assert_closed(s)

    def test_the_real_client_sends_what_the_fake_checks(self):
        client = self.client()
        try:
            client.get_secret_value(secret_id=GOOD)
        finally:
            client.close()
        with open(self.record) as f:
            lines = [json.loads(line) for line in f]
        connects = [m for m in lines if [":message-type", 4, 4] in m["headers"]]
        self.assertTrue(connects)
        self.assertIn([":version", 7, "0.1.0"], connects[-1]["headers"])
        self.assertEqual(json.loads(connects[-1]["payload"]), {"authToken": TOKEN})
        requests = [m for m in lines if ["operation", 7, fake.GET_SECRET_VALUE] in m["headers"]]
        self.assertTrue(requests)
        self.assertEqual(sorted(n for n, _, _ in requests[-1]["headers"]), sorted(
            [":content-type", "service-model-type", ":message-type", ":message-flags",
             ":stream-id", "operation"]))

    # --- rules the SDK never breaks, so raw frames ---------------------------------------------

    def raw(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(5)
        s.connect(self.socket)
        return s

    def send(self, s, message_type, flags, stream_id, headers=(), payload=b""):
        rpc = [(":message-type", message_type), (":message-flags", flags),
               (":stream-id", stream_id)]
        s.sendall(fake.encode(list(headers) + rpc, payload))

    def recv(self, s):
        headers, payload = fake.read_frame(s)
        get = lambda name, t=4: fake.header(headers, name, t)  # noqa: E731
        return get(":message-type"), get(":message-flags"), get(":stream-id"), headers, payload

    def connected(self):
        s = self.raw()
        self.send(s, fake.CONNECT, 0, 0, [(":version", "0.1.0")],
                  json.dumps({"authToken": TOKEN}).encode())
        self.assertEqual(self.recv(s)[:3], (fake.CONNECT_ACK, fake.CONNECTION_ACCEPTED, 0))
        return s

    def assert_closed(self, s):
        self.assertEqual(s.recv(1), b"")
        s.close()

    def request(self, s, stream_id, payload, model_type=fake.REQUEST_MODEL,
                operation=fake.GET_SECRET_VALUE):
        self.send(s, fake.APPLICATION_MESSAGE, 0, stream_id,
                  [(":content-type", "application/json"), ("service-model-type", model_type),
                   ("operation", operation)], payload)

    def test_a_wrong_version_is_rejected(self):
        s = self.raw()
        self.send(s, fake.CONNECT, 0, 0, [(":version", "0.2.0")],
                  json.dumps({"authToken": TOKEN}).encode())
        self.assertEqual(self.recv(s)[:2], (fake.CONNECT_ACK, 0))
        self.assert_closed(s)

    def test_a_request_before_connect_is_a_protocol_error(self):
        s = self.raw()
        self.request(s, 1, json.dumps({"secretId": GOOD}).encode())
        self.assertEqual(self.recv(s)[0], fake.PROTOCOL_ERROR)
        self.assert_closed(s)

    def test_missing_rpc_headers_are_a_protocol_error(self):
        s = self.raw()
        s.sendall(fake.encode([(":message-type", fake.CONNECT)], b"{}"))
        self.assertEqual(self.recv(s)[0], fake.PROTOCOL_ERROR)
        self.assert_closed(s)

    def test_streams_must_be_consecutive(self):
        s = self.connected()
        self.request(s, 2, json.dumps({"secretId": GOOD}).encode())
        self.assertEqual(self.recv(s)[0], fake.PROTOCOL_ERROR)
        self.assert_closed(s)

    def test_bad_payloads_are_internal_server_errors(self):
        s = self.connected()
        for stream_id, payload in enumerate([b"not json", b'["a list"]'], start=1):
            self.request(s, stream_id, payload)
            kind, flags, sid, headers, body = self.recv(s)
            self.assertEqual((kind, flags, sid), (fake.APPLICATION_ERROR, fake.TERMINATE_STREAM,
                                                  stream_id))
            self.assertEqual(fake.header(headers, ":content-type", 7), "text/plain")
            self.assertIsNone(fake.header(headers, "service-model-type", 7))
            self.assertEqual(body, b"InternalServerError")
        # A request for another model type than the operation's.
        self.request(s, 3, json.dumps({"secretId": GOOD}).encode(),
                     model_type="aws.greengrass#GetThingShadowRequest")
        self.assertEqual(self.recv(s)[0], fake.APPLICATION_ERROR)
        s.close()

    def test_answers_end_their_stream(self):
        s = self.connected()
        self.request(s, 1, json.dumps({"secretId": GOOD}).encode())
        kind, flags, sid, headers, body = self.recv(s)
        self.assertEqual((kind, flags, sid), (fake.APPLICATION_MESSAGE, fake.TERMINATE_STREAM, 1))
        self.assertEqual(fake.header(headers, "service-model-type", 7), fake.RESPONSE_MODEL)
        self.assertEqual(json.loads(body)["secretValue"], {"secretString": VALUE})
        s.close()


if __name__ == "__main__":
    unittest.main(verbosity=1)
