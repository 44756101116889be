"""Serve the as-you-type example page next to the autocompleter.

    bentoml serve services.autocomplete.service:Autocomplete --port 3001   # the service
    python examples/autocomplete_web/serve.py --port 8080 --service http://localhost:3001
    # open http://localhost:8080, type, press Tab

The page calls /v1/suggest on its own origin; this server forwards /v1/* to the service,
so the browser needs no cross-origin setup. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

PAGE = (Path(__file__).parent / "index.html").read_bytes()


def handler_for(service: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # the http.server API names it so
            if self.path in ("/", "/index.html"):
                self._reply(200, "text/html; charset=utf-8", PAGE)
            else:
                self._reply(404, "text/plain", b"not found")

        def do_POST(self) -> None:
            if not self.path.startswith("/v1/"):
                return self._reply(404, "text/plain", b"not found")
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            request = urllib.request.Request(
                service + self.path, data=body, method="POST", headers={"content-type": "application/json"}
            )
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    self._reply(response.status, "application/json", response.read())
            except urllib.error.HTTPError as error:  # the service's own 4xx/5xx: pass it on
                self._reply(error.code, "application/json", error.read())
            except urllib.error.URLError as error:
                message = {"error": {"message": f"autocompleter unreachable: {error.reason}"}}
                self._reply(502, "application/json", json.dumps(message).encode())

        def _reply(self, status: int, content_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("content-type", content_type)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:  # quiet: the service logs the requests
            pass

    return Handler


def make_server(port: int, service: str, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    return ThreadingHTTPServer((host, port), handler_for(service.rstrip("/")))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Serve the autocomplete example page.")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--service", default="http://localhost:3001", help="the autocompleter's URL")
    parser.add_argument("--host", default="127.0.0.1", help="0.0.0.0 inside a container")
    args = parser.parse_args()
    print(f"open http://localhost:{args.port} (suggestions from {args.service})", flush=True)
    make_server(args.port, args.service, args.host).serve_forever()
