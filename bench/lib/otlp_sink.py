#!/usr/bin/env python3
"""A stand-in OpenTelemetry collector: accepts OTLP/HTTP exports on 127.0.0.1 and drops them.

The benchmark measures the service with span export on (issue 6: "telemetry on"), so the
exporter must have somewhere to send to. Usage: otlp_sink.py STATS_FILE; prints its port on
the first line of stdout; on SIGTERM writes {"requests": N, "bytes": M} to STATS_FILE.
"""

import json
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

stats = {"requests": 0, "bytes": 0}
lock = threading.Lock()


class Sink(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):  # noqa: N802 (http.server's naming)
        n = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(n)
        with lock:
            stats["requests"] += 1
            stats["bytes"] += n
        # An empty ExportTraceServiceResponse.
        self.send_response(200)
        self.send_header("Content-Type", self.headers.get("Content-Type", "application/x-protobuf"))
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    server.daemon_threads = True

    def stop(*_):
        with open(sys.argv[1], "w") as f:
            json.dump(stats, f)
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
