"""`pss review`'s local web server: the page, its JSON endpoints and the one state-changing POST, on the standard library.

Protections, since any page open in the same browser can send requests to a local port:
- it listens on 127.0.0.1 unless told otherwise, and refuses 0.0.0.0/:: (every interface);
- a request whose Host header is not the address served is refused (DNS rebinding would otherwise let a remote
  page read the token);
- the POST that labels a pair needs the server's random token (embedded in the page; another origin cannot read
  it), a JSON body and, when the browser sends one, this server's Origin;
- values reach the page only as JSON, with <, > and & escaped, set by the page as text (never as HTML); the page
  itself holds only HTML-escaped values, and a Content-Security-Policy allows its own inline code alone.
"""

from __future__ import annotations

import errno
import hmac
import html
import ipaddress
import json
import logging
import secrets
import socket
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

from pss_ops.review.data import ReviewData, Unknown
from pss_ops.review.labels import LabelStore, ReviewError, check_writable

log = logging.getLogger(__name__)

TOKEN_HEADER = "X-PSS-Token"
MAX_BODY = 4096
PAGE_CSP = (
    "default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; connect-src 'self'; img-src data:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
COMMON_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Resource-Policy": "same-origin",
}


def json_bytes(payload: Any) -> bytes:
    """JSON with <, > and & as \\u escapes: the same data, and inert even if something renders it as HTML."""
    text = json.dumps(payload, ensure_ascii=False, allow_nan=False)
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e").encode("utf-8")


def render_page(values: dict[str, str]) -> str:
    """page.html with each {{name}} replaced by its HTML-escaped value."""
    page = resources.files("pss_ops.review").joinpath("page.html").read_text(encoding="utf-8")
    for name, value in values.items():
        page = page.replace("{{" + name + "}}", html.escape(value, quote=True))
    return page


def _position(text: str) -> int | None:
    return int(text) if text.isdigit() and len(text) < 10 else None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_host(host: str) -> None:
    """Refuse every-interface addresses; warn loudly for any other address that is not loopback."""
    try:
        wildcard = ipaddress.ip_address(host).is_unspecified
    except ValueError:
        wildcard = host == ""
    if wildcard:
        raise ReviewError(
            f"--host {host or '(empty)'} would serve the page, and let anyone who reaches this machine write labels, on every "
            "interface; pss review binds to 127.0.0.1 (give a single address with --host if you must)"
        )
    if not is_loopback(host):
        log.warning(
            "SERVING ON %s, NOT LOOPBACK: anyone who can reach this address can read the pairs and, with the page, write labels", host
        )


class ReviewServer(ThreadingHTTPServer):
    """The HTTP server with the review data, the page's token and the Host values it answers to."""

    daemon_threads = True

    def __init__(self, data: ReviewData, host: str = "127.0.0.1", port: int = 8765) -> None:
        check_host(host)
        self.data = data
        self.token = secrets.token_urlsafe(32)
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            super().__init__((host, port), ReviewHandler)
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                raise ReviewError(
                    f"port {port} on {host} is in use (another pss review?): pick another with --port, or --port 0 for any free one"
                ) from None
            raise ReviewError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None
        port = self.server_address[1]
        names = {host, "127.0.0.1", "localhost", "[::1]"} if is_loopback(host) else {host}
        names = {f"[{n}]" if ":" in n and not n.startswith("[") else n for n in names}
        self.allowed_hosts = {f"{n}:{port}" for n in names} | (names if port == 80 else set())
        self.origins = {f"http://{h}" for h in self.allowed_hosts}
        self.url = f"http://{host if ':' not in host else f'[{host}]'}:{port}/"


class ReviewHandler(BaseHTTPRequestHandler):
    """GET / (the page), /api/summary, /api/search?q=, /api/query?item=, /api/queue?pos= or ?at=; POST /api/label."""

    server: ReviewServer

    def version_string(self) -> str:
        return "pss-review"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's signature
        log.debug("%s " + format, self.client_address[0], *args)

    def _send(self, status: int, body: bytes, content_type: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in {**COMMON_HEADERS, "Content-Type": content_type, "Content-Length": str(len(body)), **(extra or {})}.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, payload: Any, status: int = HTTPStatus.OK) -> None:
        self._send(status, json_bytes(payload), "application/json; charset=utf-8", {"Content-Security-Policy": "default-src 'none'"})

    def _error(self, status: int, message: str) -> None:
        # Messages are fixed text: nothing from the request is echoed back.
        self._json({"error": message}, status)

    def _host_ok(self) -> bool:
        if self.headers.get("Host", "") in self.server.allowed_hosts:
            return True
        self._error(HTTPStatus.FORBIDDEN, "unexpected Host header: open the address pss review printed")
        return False

    def do_GET(self) -> None:  # noqa: N802 - http.server's dispatch name
        if not self._host_ok():
            return
        url = urlsplit(self.path)
        params = {k: v[0] for k, v in parse_qs(url.query, max_num_fields=10).items()}
        data = self.server.data
        try:
            if url.path == "/":
                self._page()
            elif url.path == "/api/summary":
                self._json(data.summary())
            elif url.path == "/api/search":
                self._json(data.search(params.get("q", "")))
            elif url.path == "/api/query":
                self._json(data.query(params.get("item", "")))
            elif url.path == "/api/queue":
                at = params.get("at")
                position = _position(params.get("pos", "0") if at is None else at)
                if position is None:
                    self._error(HTTPStatus.BAD_REQUEST, "pos and at are queue positions (0, 1, ...)")
                else:
                    self._json(data.queue_at(position, unlabelled=at is None))
            else:
                self._error(HTTPStatus.NOT_FOUND, "no such page")
        except Unknown as err:
            self._error(HTTPStatus.NOT_FOUND, err.message)
        except Exception:  # noqa: BLE001 - a bug answers 500 and is logged; the server goes on
            log.exception("GET %s failed", url.path)
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, "internal error; see the terminal")

    do_HEAD = do_GET

    def _page(self) -> None:
        nonce = secrets.token_urlsafe(16)
        summary = self.server.data.summary()
        values = {"token": self.server.token, "nonce": nonce, "run_id": summary["run_id"], "labels_uri": summary["labels_uri"]}
        csp = {"Content-Security-Policy": PAGE_CSP.format(nonce=nonce)}
        self._send(HTTPStatus.OK, render_page(values).encode("utf-8"), "text/html; charset=utf-8", csp)

    def do_POST(self) -> None:  # noqa: N802 - http.server's dispatch name
        if not self._host_ok():
            return
        if urlsplit(self.path).path != "/api/label":
            self._error(HTTPStatus.NOT_FOUND, "no such endpoint")
            return
        origin = self.headers.get("Origin")
        if origin is not None and origin not in self.server.origins:
            self._error(HTTPStatus.FORBIDDEN, "cross-origin request refused")
            return
        if not hmac.compare_digest(self.headers.get(TOKEN_HEADER, "").encode(), self.server.token.encode()):
            self._error(HTTPStatus.FORBIDDEN, "missing or wrong token: reload the page")
            return
        if self.headers.get_content_type() != "application/json":
            self._error(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "send application/json")
            return
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self._error(HTTPStatus.LENGTH_REQUIRED, "Content-Length required")
            return
        if not 0 < length <= MAX_BODY:
            self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "body too large")
            return
        self._label(self.rfile.read(length))

    def _label(self, body: bytes) -> None:
        try:
            request = json.loads(body)
            id_a, id_b, label = request["id_a"], request["id_b"], request["label"]
        except (ValueError, TypeError, KeyError):
            self._error(HTTPStatus.BAD_REQUEST, "give a JSON object with id_a, id_b and label")
            return
        # type() is int: JSON's true and 1.0 are not labels.
        if not (isinstance(id_a, str) and isinstance(id_b, str)) or type(label) is not int or label not in (0, 1):
            self._error(HTTPStatus.BAD_REQUEST, "id_a and id_b must be item ids, label 0 or 1")
            return
        try:
            self._json(self.server.data.label(id_a, id_b, label))
        except Unknown as err:
            self._error(HTTPStatus.BAD_REQUEST, err.message)
        except OSError as err:
            log.error("could not write %s: %s", self.server.data.labels.uri, err)
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, "could not write the labels file; see the terminal")


def open_review(run: str, labels_uri: str, *, host: str = "127.0.0.1", port: int = 8765, queue_size: int = 200) -> ReviewServer:
    """Check the address and the labels file, read the run, and bind: every refusal comes before serving."""
    check_host(host)
    check_writable(labels_uri)
    return ReviewServer(ReviewData(run, LabelStore(labels_uri), queue_size), host, port)


def serve(server: ReviewServer, announce: Any = print) -> None:
    """Serve until Ctrl-C, then close the socket; announce gets the URL to open."""
    announce(f"pss review: open {server.url} (Ctrl-C to stop); labels go to {server.data.labels.uri}")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
