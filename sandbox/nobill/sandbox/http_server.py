"""HTTP/1.1 transport: a threading stdlib server with keep-alive, routing each request to
the Stripe API gateway, the control API or the hosted Checkout page.

Each response is written with a single `sendall` (headers and body together) and Nagle's
algorithm is off, so keep-alive clients are not stalled by delayed ACKs.
"""

from __future__ import annotations

import http.client
import logging
import socket
import struct
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from nobill.sandbox import checkout_page, control, errors, portal_page
from nobill.sandbox.gateway import Response, json_bytes

if TYPE_CHECKING:
    from nobill.sandbox.server import Sandbox

log = logging.getLogger("nobill.sandbox.http")

MAX_BODY = 10 * 1024 * 1024


class SandboxHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 512

    def __init__(self, address: tuple[str, int], sandbox: "Sandbox") -> None:
        self.sandbox = sandbox
        self._connections: set[socket.socket] = set()
        self._aborted: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, SandboxRequestHandler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
            aborted = request in self._aborted
            self._aborted.discard(request)
        if aborted:
            # No FIN first: with SO_LINGER 0, close() sends a TCP reset.
            request.close()
            return
        super().shutdown_request(request)

    def mark_aborted(self, request: socket.socket) -> None:
        with self._connections_lock:
            self._aborted.add(request)

    def close_all_connections(self) -> None:
        """Wake keep-alive handler threads blocked on idle connections so stop is prompt."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class Headers(dict):  # type: ignore[type-arg]
    """Request headers with case-insensitive lookup.

    NOTE: http.server parses headers with the email package, which costs more than the
    rest of a typical sandbox request; this simple parser keeps the server far from
    being a benchmark's bottleneck.
    """

    def __setitem__(self, name: str, value: str) -> None:
        super().__setitem__(name.lower(), value)

    def __getitem__(self, name: str) -> str:
        return super().__getitem__(name.lower())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and super().__contains__(name.lower())

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        return super().get(name.lower(), default)


MAX_HEADERS = 100
MAX_LINE = 65536


class SandboxRequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "nobill-stripe-sandbox"
    sys_version = ""
    disable_nagle_algorithm = True
    server: SandboxHTTPServer
    raw_requestline: bytes

    def parse_request(self) -> bool:
        """The request line and headers (replaces http.server's email-based parser)."""
        self.command = None  # type: ignore[assignment]
        self.request_version = self.default_request_version
        self.close_connection = True
        self.requestline = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
        words = self.requestline.split()
        if len(words) != 3:
            self.send_error(400, f"Bad request line {self.requestline!r}")
            return False
        command, path, version = words
        if version not in ("HTTP/1.1", "HTTP/1.0"):
            self.send_error(505, f"Unsupported HTTP version {version}")
            return False
        self.command, self.path, self.request_version = command, path, version
        headers = Headers()
        for _ in range(MAX_HEADERS + 1):
            line = self.rfile.readline(MAX_LINE + 1)
            if len(line) > MAX_LINE:
                self.send_error(431, "Header line too long")
                return False
            if line in (b"\r\n", b"\n", b""):
                break
            name, separator, value = line.decode("iso-8859-1").partition(":")
            if not separator:
                self.send_error(400, "Malformed header line")
                return False
            headers[name.strip()] = value.strip()
        else:
            self.send_error(431, "Too many headers")
            return False
        self.headers = headers  # type: ignore[assignment]
        connection = headers.get("Connection", "").lower()
        if version == "HTTP/1.1":
            self.close_connection = connection == "close"
        else:
            self.close_connection = connection != "keep-alive"
        if headers.get("Expect", "").lower() == "100-continue" and version == "HTTP/1.1":
            self.send_response_only(100)
            self.end_headers()
        return True

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        sandbox = self.server.sandbox
        parts = urlsplit(self.path)
        path, query = parts.path, parts.query
        try:
            body = self._read_body()
        except errors.StripeError as error:
            self._send(Response(error.status, json_bytes(error.body())))
            self.close_connection = True
            return
        if path.startswith("/v1/"):
            response = sandbox.gateway.handle(method, path, query, body, self.headers)  # type: ignore[arg-type]
        elif path.startswith("/_sandbox/"):
            response = control.handle(sandbox, method, path, query, body)
        elif path.startswith("/checkout/") and path.count("/") == 2:
            session_id = path.rsplit("/", 1)[1]
            if method == "POST":
                response = checkout_page.submit(sandbox.state, session_id, body)
            else:
                response = checkout_page.render(sandbox.state, session_id)
        elif path.startswith("/billing_portal/") and path.count("/") == 2:
            session_id = path.rsplit("/", 1)[1]
            if method == "POST":
                response = portal_page.submit(sandbox.state, session_id, body)
            else:
                response = portal_page.render(sandbox.state, session_id)
        elif path == "/" and method == "GET":
            response = Response(200, json_bytes({"service": "NOBill Stripe sandbox", "api": f"{sandbox.url}/v1", "control": f"{sandbox.url}/_sandbox/health"}))
        else:
            unknown = errors.unrecognized_url(method, path)
            response = Response(unknown.status, json_bytes(unknown.body()))
        if response.reset:
            self._reset()
            return
        self._send(response)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            raise errors.invalid_request("Chunked request bodies are not supported; send Content-Length.", status=411)
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            raise errors.invalid_request("Request body too large.", status=413)
        return self.rfile.read(length) if length > 0 else b""

    def _send(self, response: Response) -> None:
        reason = http.client.responses.get(response.status, "")
        lines = [
            f"HTTP/1.1 {response.status} {reason}",
            f"Server: {self.server_version}",
            f"Date: {self.date_time_string()}",
            f"Content-Type: {response.content_type}",
            f"Content-Length: {len(response.body)}",
            "Connection: close" if self.close_connection else "Connection: keep-alive",
        ]
        lines.extend(f"{name}: {value}" for name, value in response.headers)
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        try:
            self.wfile.write(head + response.body)
        except OSError:
            self.close_connection = True

    def _reset(self) -> None:
        """Simulate a network failure: drop the connection with a TCP reset."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.server.mark_aborted(self.connection)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
        log.debug(format, *args)
