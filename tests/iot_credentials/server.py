#!/usr/bin/env python3
"""A stand-in for the AWS IoT credentials provider endpoint, for agent/tests/iot_credentials.rs.

HTTPS that REQUIRES a client certificate signed by --client-ca. Prints its port on the first
line of stdout once listening. GET /role-aliases/{alias}/credentials with the header
x-amzn-iot-thingname answers as IoT Core does; the alias picks the behaviour:
  minute    credentials expiring in 1 minute
  short     credentials expiring in 2 minutes
  long      credentials expiring in 1 hour
  malformed a 200 whose body is not the documented JSON
  other     403 {"message": "..."} (an unknown role alias)
Each answer's accessKeyId counts requests (AKIDTEST1, AKIDTEST2, ...).

With --register URL each issued key is made known, with its expiry, to the KVS emulator at URL
(POST /_admin/credentials) before it is handed out, as STS keys are known to the service that
checks them; and a line {"access_key", "expires_ms"} is appended to issued.jsonl in the working
directory.
"""
import argparse
import datetime
import http.server
import json
import ssl
import sys
import urllib.request

COUNT = 0
REGISTER = None
LIFE = {"minute": datetime.timedelta(minutes=1), "short": datetime.timedelta(minutes=2),
        "long": datetime.timedelta(hours=1)}


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
        if alias in LIFE:
            # Whole seconds, as the expiration is written.
            expires = (now + LIFE[alias]).replace(microsecond=0)
            creds = {
                "accessKeyId": f"AKIDTEST{COUNT}",
                "secretAccessKey": "SECRETTEST",
                "sessionToken": "TOKENTEST",
                "expiration": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
            if REGISTER:
                register(creds, int(expires.timestamp() * 1000))
            return self.reply(200, json.dumps({"credentials": creds}))
        if alias == "malformed":
            return self.reply(200, '{"credentials":{"accessKeyId":"AKIDTEST","secretAccessKey":"SECRETTEST"')
        return self.reply(403, '{"message":"Access Denied"}')


def register(creds, expires_ms):
    doc = {"access_key": creds["accessKeyId"], "secret_key": creds["secretAccessKey"],
           "session_token": creds["sessionToken"], "expires_ms": expires_ms}
    req = urllib.request.Request(f"{REGISTER}/_admin/credentials", data=json.dumps(doc).encode(),
                                 method="POST", headers={"Content-Type": "application/json"})
    urllib.request.urlopen(req, timeout=10).read()
    with open("issued.jsonl", "a") as f:
        f.write(json.dumps({"access_key": creds["accessKeyId"], "expires_ms": expires_ms}) + "\n")


def main():
    global REGISTER
    p = argparse.ArgumentParser()
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--client-ca", required=True)
    p.add_argument("--register", help="the KVS emulator's URL, to make issued keys known to")
    a = p.parse_args()
    REGISTER = a.register
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
