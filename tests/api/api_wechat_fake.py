"""A local HTTP server that answers `/sns/jscode2session` the way WeChat does, errors included.

The login code picks the answer, so one server serves every test:

    bad-*       errcode 40029 (invalid code)      used-*     errcode 40163 (code used)
    limit-*     errcode 45011 (rate limited)      busy-*     errcode -1 (system busy)
    blocked-*   errcode 40226 (high-risk user)    http500-*  HTTP 500
    garbage-*   HTTP 200, not JSON                noopenid-* errcode 0 without openid
    hang-*      no answer until the server stops  union-*    success with a unionid
    anything else: success, openid derived from the code (same code, same rider).

A wrong AppID or AppSecret gets errcode 40125, as WeChat answers it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

APPID = "wx0123456789abcdef"
SECRET = "fake-wechat-app-secret-0123456789"


def openid_for(code: str) -> str:
    """The openid the fake gives the rider behind `code`."""
    return "o" + hashlib.sha256(code.encode()).hexdigest()[:27]


def session_key_for(code: str) -> str:
    """The session_key the fake hands out for `code` (the API must never reveal it)."""
    return "sk" + hashlib.sha256(b"key" + code.encode()).hexdigest()[:22]


ERRORS = {
    "bad-": (40029, "invalid code, rid: 6790a1b2-0c1d2e3f-4a5b6c7d"),
    "used-": (40163, "code been used, rid: 6790a1b2-0c1d2e3f-4a5b6c7e"),
    "limit-": (45011, "api minute-quota reach limit  mustslower  retry next minute"),
    "busy-": (-1, "system error"),
    "blocked-": (40226, "invalid user, high risk"),
}


class _Handler(BaseHTTPRequestHandler):
    server: FakeWeChatServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        """Stay quiet: pytest shows what matters."""

    def _reply(self, status: int, body: bytes, content_type: str = "text/plain") -> None:
        self.send_response(status)
        # WeChat really sends JSON as text/plain.
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        self.server.requests.append(query)
        if parts.path != "/sns/jscode2session":
            self._reply(404, b"not found")
            return
        if query.get("appid") != APPID or query.get("secret") != SECRET:
            self._json({"errcode": 40125, "errmsg": "invalid appsecret"})
            return
        if query.get("grant_type") != "authorization_code":
            self._json({"errcode": 40002, "errmsg": "invalid grant_type"})
            return
        self._answer(query.get("js_code", ""))

    def _answer(self, code: str) -> None:
        for prefix, (errcode, errmsg) in ERRORS.items():
            if code.startswith(prefix):
                self._json({"errcode": errcode, "errmsg": errmsg})
                return
        if code.startswith("http500-"):
            self._reply(500, b"<html>500 Internal Server Error</html>", "text/html")
        elif code.startswith("garbage-"):
            self._reply(200, b"<html>upstream proxy error</html>")
        elif code.startswith("noopenid-"):
            self._json({"errcode": 0, "session_key": session_key_for(code)})
        elif code.startswith("hang-"):
            # Longer than any test's client timeout; the client has hung up by then.
            self.server.release.wait(5)
            with contextlib.suppress(OSError):
                self._json({"errcode": -1, "errmsg": "too late"})
        else:
            answer: dict[str, Any] = {
                "openid": openid_for(code),
                "session_key": session_key_for(code),
            }
            if code.startswith("union-"):
                answer["unionid"] = "u" + openid_for(code)[1:]
            self._json(answer)

    def _json(self, answer: dict[str, Any]) -> None:
        self._reply(200, json.dumps(answer).encode())


class FakeWeChatServer(ThreadingHTTPServer):
    """jscode2session on 127.0.0.1 and a free port, served from a daemon thread."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[dict[str, str]] = []
        self.release = threading.Event()
        self._thread = threading.Thread(target=self.serve_forever, daemon=True, name="wechat")

    @property
    def url(self) -> str:
        """Base URL to give the API as FREECAR_API_WECHAT_BASE_URL."""
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakeWeChatServer:
        """Serve in the background."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Let hanging answers go and stop serving."""
        self.release.set()
        self.shutdown()
        self.server_close()
        self._thread.join(5)
