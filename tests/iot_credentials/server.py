#!/usr/bin/env python3
"""A stand-in for the AWS IoT credentials provider endpoint, for agent/tests/iot_credentials.rs.

HTTPS that REQUIRES a client certificate signed by --client-ca. Prints its port on the first
line of stdout once listening. GET /role-aliases/{alias}/credentials with the header
x-amzn-iot-thingname answers as IoT Core does; the alias picks the behaviour:
  short     credentials expiring in 2 minutes
  long      credentials expiring in 1 hour
  malformed a 200 whose body is not the documented JSON
  other     403 {"message": "..."} (an unknown role alias)
Each answer's accessKeyId counts requests (AKIDTEST1, AKIDTEST2, ...).
"""
import argparse
import datetime
import http.server
import json
import ssl
import sys

COUNT = 0


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def reply(self, status, body):
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        global COUNT
        parts = self.path.split("/")
        if len(parts) != 4 or parts[1] != "role-aliases" or parts[3] != "credentials":
            return self.reply(404, '{"message":"not found"}')
        if not self.headers.get("x-amzn-iot-thingname"):
            return self.reply(400, '{"message":"missing x-amzn-iot-thingname"}')
        alias = parts[2]
        COUNT += 1
        now = datetime.datetime.now(datetime.timezone.utc)
        if alias in ("short", "long"):
            life = datetime.timedelta(minutes=2) if alias == "short" else datetime.timedelta(hours=1)
            creds = {
                "accessKeyId": f"AKIDTEST{COUNT}",
                "secretAccessKey": "SECRETTEST",
                "sessionToken": "TOKENTEST",
                "expiration": (now + life).strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
            return self.reply(200, json.dumps({"credentials": creds}))
        if alias == "malformed":
            return self.reply(200, '{"credentials":{"accessKeyId":"AKIDTEST","secretAccessKey":"SECRETTEST"')
        return self.reply(403, '{"message":"Access Denied"}')


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--client-ca", required=True)
    a = p.parse_args()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(a.cert, a.key)
    ctx.load_verify_locations(a.client_ca)
    ctx.verify_mode = ssl.CERT_REQUIRED
    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
