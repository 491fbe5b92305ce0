"""Local HTTP servers (http.server in a thread) that answer like an SMS gateway and like WeChat's API, so
the providers are exercised over real sockets, each error class by the address it is sent to."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        url = urlparse(self.path)
        request = {
            "path": url.path,
            "query": {k: v[0] for k, v in parse_qs(url.query).items()},
            "headers": dict(self.headers),
            "raw": raw,
            "json": json.loads(raw) if raw else None,
        }
        with self.server.lock:
            self.server.requests.append(request)
        status, headers, body = self.server.app(request)
        data = body if isinstance(body, bytes) else json.dumps(body, ensure_ascii=False).encode()
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_PUT = do_POST


class FakeServer:
    def __init__(self, app):
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.app = app
        self.httpd.requests = []
        self.httpd.lock = threading.Lock()
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    @property
    def requests(self) -> list[dict]:
        return self.httpd.requests

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        return False


def sms_gateway(request):
    """By the number: +8613800000001 ok, ...429 rate limited (Retry-After: 7), ...500 server error,
    ...400 bad request, ...slow answers after 5 s, ...body answers 200 with an error code in the body."""
    to = (request["json"] or {}).get("to", "")
    if to.endswith("429"):
        return 429, {"Retry-After": "7"}, {"error": "slow down"}
    if to.endswith("500"):
        return 500, {}, {"error": "boom"}
    if to.endswith("400"):
        return 400, {}, {"error": "bad number"}
    if to.endswith("999"):
        time.sleep(5)
    if to.endswith("111"):
        return 200, {}, {"code": "MOBILE_NUMBER_ILLEGAL"}
    if to.endswith("222"):
        return 200, {}, {"code": "BUSINESS_LIMIT_CONTROL"}
    return 200, {}, {"code": "OK", "data": {"id": f"sms-{request['headers'].get('Idempotency-Key')}"}}


class WeChatApp:
    """WeChat's stable token and message endpoints. The current token is TOKEN-<n>; `expire()` makes the
    current one invalid (the next message gets 42001, and a normal-mode fetch hands out a new one)."""

    ERRORS_BY_OPENID = {
        "o-busy": -1,
        "o-quota": 45009,
        "o-unfollowed": 43004,
        "o-refused": 43101,
        "o-bad": 40003,
    }
    ERRORS_BY_TEMPLATE = {"bad-template": 40037, "bad-data": 47003}

    def __init__(self, token_delay: float = 0.0):
        self.token_delay = token_delay
        self.generation = 1
        self.token_fetches = 0
        self.lock = threading.Lock()
        self.msgid = 1000

    def expire(self):
        with self.lock:
            self.generation += 1

    @property
    def token(self) -> str:
        return f"TOKEN-{self.generation}"

    def __call__(self, request):
        path = request["path"]
        if path == "/cgi-bin/stable_token":
            body = request["json"]
            time.sleep(self.token_delay)
            with self.lock:
                self.token_fetches += 1
                if body.get("appid") != "wx-app" or body.get("secret") != "s3cret":
                    return 200, {}, {"errcode": 40125, "errmsg": "invalid appsecret"}
                if body.get("force_refresh"):
                    self.generation += 1
                return 200, {}, {"access_token": self.token, "expires_in": 7200}
        if request["query"].get("access_token") != self.token:
            return 200, {}, {"errcode": 42001, "errmsg": "access_token expired"}
        body = request["json"]
        if body["touser"] == "o-slow":
            time.sleep(4)
        if body["touser"] in self.ERRORS_BY_OPENID:
            code = self.ERRORS_BY_OPENID[body["touser"]]
            return 200, {}, {"errcode": code, "errmsg": "error"}
        if body["template_id"] in self.ERRORS_BY_TEMPLATE:
            return 200, {}, {"errcode": self.ERRORS_BY_TEMPLATE[body["template_id"]], "errmsg": "error"}
        with self.lock:
            self.msgid += 1
            return 200, {}, {"errcode": 0, "errmsg": "ok", "msgid": self.msgid}
