"""A lean HTTP/1.1 server, standard library only, that both halves serve with: the plugin
(dockerd's VolumeDriver calls, through plugin/wsgi.py) and esx_service (its API listeners).

One thread per connection, and the connection's requests answered in that thread: dockerd
and the plugin's client keep their connections alive, so a request costs no hand-off
between threads (issue 15: gunicorn's gthread worker hands every request from its polling
thread to a pool thread and back, about 1.7 raw HTTP hops for nothing). The request line and
headers are split by hand instead of through ``http.client.parse_headers`` (email.parser),
and each answer leaves in one ``sendall``. A slow request (a Mount can take seconds) holds
only its own connection's thread, and there is no cap on threads.

What each server says is its own: ``answer(request)`` builds the response, ``refusal(status,
message)`` the response to a request this module refuses (malformed, too long, a body over
``max_body``); ``failure(request, exc)`` the response when ``answer`` raises.

``drain(timeout)`` is the clean stop: no new connections, idle kept-alive connections closed,
requests in flight answered (bounded wait).
"""

from __future__ import annotations

import logging
import os
import socket
import socketserver
import threading
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import ClassVar

log = logging.getLogger("dockvols.http_server")

MAX_LINE = 65536  # request line and each header line, as http.server
MAX_HEADERS = 100
IDLE_TIMEOUT = 120.0
# after a refusal: how long and how much of a client's unread input is read and dropped
DISCARD_SECONDS = 0.5
DISCARD_READS = 64
_REASONS = {s.value: s.phrase for s in HTTPStatus}


@dataclass
class Request:
    method: str
    target: str  # as sent: path and query
    version: str  # "HTTP/1.1" or "HTTP/1.0"
    headers: dict[str, str]  # names lower-cased; a repeated header keeps its last value
    body: bytes = b""

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    @property
    def query(self) -> str:
        return self.target.split("?", 1)[1] if "?" in self.target else ""


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str | None = "application/json"  # None: no Content-Type header
    headers: list[tuple[str, str]] = field(default_factory=list)
    close: bool = False  # close the connection after this answer


class Refused(Exception):
    """A request this server will not serve; the connection closes after the answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class HttpHandler(socketserver.BaseRequestHandler):
    """One connection: read a request, answer it, until the client closes, an idle timeout,
    a refusal or the server's drain. Subclasses say what to answer."""

    server: HttpServerMixin  # type: ignore[assignment]
    timeout: ClassVar[float] = IDLE_TIMEOUT  # a silent client never holds a thread for ever
    max_body: ClassVar[int] = 256 * 1024

    # -- what a subclass says --------------------------------------------------------------
    def answer(self, request: Request) -> Response:
        raise NotImplementedError

    def refusal(self, status: int, message: str) -> Response:
        return Response(status, message.encode(), "text/plain; charset=utf-8")

    def failure(self, request: Request, exc: Exception) -> Response:
        log.exception("internal error on %s %s", request.method, request.path)
        return Response(500, b"internal error", "text/plain; charset=utf-8")

    # -- the connection --------------------------------------------------------------------
    def setup(self) -> None:
        self.connection: socket.socket = self.request
        self.connection.settimeout(self.timeout)
        self.rfile = self.connection.makefile("rb")
        self.request_method = ""

    def handle(self) -> None:
        server = self.server
        conn = self.connection
        if not server.track(conn):
            return  # the server is draining: do not start on this connection
        try:
            while True:
                try:
                    request = self._read_request()
                except Refused as exc:
                    try:
                        self._send(self.refusal(exc.status, exc.message), close=True)
                    except OSError:
                        return  # the client went away
                    self._discard_input()
                    return
                except (TimeoutError, ConnectionError, OSError):
                    return  # idle too long, or the client went away
                if request is None:
                    return
                try:
                    response = self.answer(request)
                except Exception as exc:  # the last boundary: answer, keep serving
                    response = self.failure(request, exc)
                # In flight until its answer is written: a drain that saw it answered
                # earlier let the process exit with the answer unsent.
                close = response.close or _wants_close(request) or server.draining
                try:
                    self._send(response, close)
                except OSError:
                    return  # the client went away
                if not server.done_with(conn) or close:  # a drain begun meanwhile: close
                    return
        finally:
            server.untrack(conn)

    def finish(self) -> None:
        try:
            self.rfile.close()
        except OSError:
            pass

    # -- reading ---------------------------------------------------------------------------
    def _readline(self, too_long: int, what: str) -> bytes:
        line = self.rfile.readline(MAX_LINE + 1)
        if len(line) > MAX_LINE:
            raise Refused(too_long, f"{what} over {MAX_LINE} bytes")
        return line

    def _read_request(self) -> Request | None:
        self.request_method = ""
        line = self._readline(414, "request line")
        while line in (b"\r\n", b"\n"):  # stray CRLF after a previous body (RFC 9112 2.2)
            line = self._readline(414, "request line")
        if not line:
            return None  # the client closed
        # a request has begun: a drain now waits for its answer (the idle timeout still
        # bounds each read, so a half-sent request cannot hold the thread for ever)
        self.server.busy(self.connection)
        words = line.decode("iso-8859-1").split()
        if len(words) != 3:
            self.request_method = words[0] if words else ""
            raise Refused(400, f"bad request line {line.decode('iso-8859-1').strip()!r}")
        method, target, version = words
        self.request_method = method
        if version not in ("HTTP/1.1", "HTTP/1.0"):
            raise Refused(505, f"HTTP version {version!r} is not supported; use HTTP/1.1")
        headers: dict[str, str] = {}
        count = 0
        while True:
            raw = self._readline(431, "header line")
            if raw in (b"\r\n", b"\n"):
                break
            if not raw:
                raise ConnectionError("client closed inside the headers")
            count += 1
            if count > MAX_HEADERS:
                raise Refused(431, f"more than {MAX_HEADERS} headers")
            text = raw.decode("iso-8859-1")
            name, sep, value = text.partition(":")
            if not sep or not name or name != name.strip() or text[0] in " \t":
                raise Refused(400, f"bad header line {text.strip()!r}")
            headers[name.lower()] = value.strip()
        request = Request(method, target, version, headers)
        request.body = self._read_body(request)
        return request

    def _read_body(self, request: Request) -> bytes:
        headers = request.headers
        coding = headers.get("transfer-encoding")
        declared = headers.get("content-length")
        if coding is not None:
            if coding.lower() != "chunked":
                raise Refused(501, f"transfer coding {coding!r} is not supported; "
                                   "use chunked or Content-Length")
        elif declared is None:
            return b""
        else:
            try:
                length = int(declared)
            except ValueError:
                length = -1
            if length < 0 or length > self.max_body:
                raise Refused(413, f"request body length {declared!r} is invalid or over "
                                   f"the {self.max_body} byte limit")
        # only now, so a body we would refuse is never asked for
        if headers.get("expect", "").lower() == "100-continue" \
                and request.version == "HTTP/1.1":
            self.connection.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        if coding is not None:
            return self._read_chunked()
        body = self.rfile.read(length) if length else b""
        if len(body) < length:
            raise ConnectionError("client closed inside the body")
        return body

    def _read_chunked(self) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            size_line = self._readline(400, "chunk size line")
            try:
                size = int(size_line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise Refused(400, f"bad chunk size line {size_line[:40]!r}") from None
            if size < 0:
                raise Refused(400, f"bad chunk size {size}")
            total += size
            if total > self.max_body:
                raise Refused(413, f"request body over the {self.max_body} byte limit")
            if size == 0:
                while self._readline(431, "trailer line") not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(parts)
            chunk = self.rfile.read(size)
            if len(chunk) < size:
                raise ConnectionError("client closed inside a chunk")
            parts.append(chunk)
            self.rfile.readline(3)  # the CRLF after the chunk

    # -- writing ---------------------------------------------------------------------------
    def _send(self, response: Response, close: bool) -> None:
        """Status line, headers and body in one write: the client wakes once per answer."""
        head = [f"HTTP/1.1 {response.status} {_REASONS.get(response.status, 'Unknown')}"]
        if response.content_type is not None:
            head.append(f"Content-Type: {response.content_type}")
        head += [f"{name}: {value}" for name, value in response.headers]
        head.append(f"Content-Length: {len(response.body)}")
        if close:
            head.append("Connection: close")
        data = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
        if self.request_method != "HEAD" and response.status >= 200 \
                and response.status not in (204, 304):
            data += response.body
        self.connection.sendall(data)

    def _discard_input(self) -> None:
        """After a refusal, read briefly what the client is still sending before the
        connection closes: closing with unread input resets the connection, and the client
        may then lose the answer it has not read."""
        try:
            self.connection.settimeout(DISCARD_SECONDS)
            for _ in range(DISCARD_READS):
                if not self.connection.recv(65536):
                    return
        except OSError:
            pass  # the client went away, or kept its side open past the wait


def _wants_close(request: Request) -> bool:
    connection = request.headers.get("connection", "").lower()
    if request.version == "HTTP/1.0":
        return connection != "keep-alive"
    return connection == "close"


class HttpServerMixin(socketserver.ThreadingMixIn):
    """Thread per connection, with the bookkeeping for a clean stop: which connections are
    idle (closed at once on drain) and which have a request in flight (answered first)."""

    daemon_threads = True
    # socketserver's default backlog of 5 makes unix-socket clients fail with EAGAIN under
    # a burst of containers starting at once.
    request_queue_size = 256

    def __init__(self, *args: object, **kwargs: object) -> None:
        self._conn_lock = threading.Lock()
        self._idle: set[socket.socket] = set()
        self._busy: set[socket.socket] = set()
        self._draining = False
        self._quiet = threading.Condition(self._conn_lock)
        super().__init__(*args, **kwargs)  # type: ignore[call-arg]

    # called by HttpHandler
    def track(self, conn: socket.socket) -> bool:
        with self._conn_lock:
            if self._draining:
                return False
            self._idle.add(conn)
            return True

    def busy(self, conn: socket.socket) -> None:
        with self._conn_lock:
            self._idle.discard(conn)
            self._busy.add(conn)

    @property
    def draining(self) -> bool:
        with self._conn_lock:
            return self._draining

    def done_with(self, conn: socket.socket) -> bool:
        """The request on ``conn`` is answered and its answer written: False when the
        connection must close now (the server is draining)."""
        with self._conn_lock:
            self._busy.discard(conn)
            if self._draining:
                self._quiet.notify_all()
                return False
            self._idle.add(conn)
            return True

    def untrack(self, conn: socket.socket) -> None:
        with self._conn_lock:
            self._idle.discard(conn)
            self._busy.discard(conn)
            self._quiet.notify_all()

    def in_flight(self) -> int:
        with self._conn_lock:
            return len(self._busy)

    def drain(self, timeout: float) -> bool:
        """Stop accepting (the caller has stopped serve_forever), close idle connections,
        and wait up to ``timeout`` s for the requests in flight to be answered. True when
        none was left unanswered."""
        deadline = time.monotonic() + timeout
        with self._conn_lock:
            self._draining = True
            idle = list(self._idle)
        for conn in idle:  # wakes the thread blocked on the next request line
            try:
                conn.shutdown(socket.SHUT_RD)
            except OSError:
                pass
        with self._conn_lock:
            while self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    log.warning("stopping with %d request(s) still in flight", len(self._busy))
                    return False
                self._quiet.wait(left)
        return True


class UnixHttpServer(HttpServerMixin, socketserver.UnixStreamServer):
    """On a unix socket file made with ``mode`` (a stale file from a previous run is
    replaced) and removed by ``server_close``."""

    def __init__(self, path: str, handler: type[HttpHandler], mode: int = 0o660) -> None:
        self._mode = mode
        if os.path.exists(path) or os.path.islink(path):
            os.unlink(path)  # a stale socket from a previous run
        super().__init__(path, handler)

    def server_bind(self) -> None:
        super().server_bind()
        os.chmod(self.server_address, self._mode)  # type: ignore[arg-type]

    def server_close(self) -> None:
        super().server_close()
        try:
            os.unlink(self.server_address)  # type: ignore[arg-type]
        except FileNotFoundError:
            pass
