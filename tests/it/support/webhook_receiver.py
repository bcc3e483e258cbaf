"""A webhook receiver for the tests: verifies every request with the `standardwebhooks`
package (an implementation of the specification independent of usage-worker's), answers 401
to a bad signature or a stale/future timestamp, and otherwise answers the scripted status
codes in turn (`hang`: no answer at all), then 200.

Every request is appended as a JSON line to --log: id, timestamp, signature, body, whether it
verified and what was answered. The listening port is printed on stdout's first line.
"""

import argparse
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--secret", action="append", required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--script", default="")
    args = parser.parse_args()
    verifiers = [Webhook(secret) for secret in args.secret]
    script = [step for step in args.script.split(",") if step]
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("content-length", "0"))).decode()
            headers = {k.lower(): v for k, v in self.headers.items()}
            error = None
            for verifier in verifiers:
                try:
                    verifier.verify(body, headers)
                    error = None
                    break
                except WebhookVerificationError as e:
                    error = str(e)
            with lock:
                step = "401" if error else (script.pop(0) if script else "200")
                with open(args.log, "a") as log:
                    log.write(json.dumps({
                        "id": headers.get("webhook-id"),
                        "timestamp": headers.get("webhook-timestamp"),
                        "signature": headers.get("webhook-signature"),
                        "body": body,
                        "verified": error is None,
                        "error": error,
                        "answered": step,
                    }) + "\n")
            if step == "hang":
                # Answer nothing until the client gives up and closes the connection. (Not a
                # sleep: under faketime with the real monotonic clock, sleeps fail.)
                self.connection.recv(1)
                return
            self.send_response(int(step))
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *_):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
