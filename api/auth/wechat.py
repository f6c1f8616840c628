"""WeChat mini-program login: exchange a `wx.login()` code for the rider's openid.

`GET {base}/sns/jscode2session?appid&secret&js_code&grant_type=authorization_code` answers
`{"openid", "session_key", "unionid"?}` or `{"errcode", "errmsg"}` (with HTTP 200 either way,
and often a text/plain content type). The session_key is used by nothing yet and is never
returned or stored: the phone-number and user-info APIs this issue does not use are the only
things that need it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Final

import httpx
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from api.errors import ApiError, ServiceUnavailableError, UnauthorizedError

if TYPE_CHECKING:
    from pydantic import SecretStr

log = logging.getLogger(__name__)

JSCODE2SESSION_PATH: Final = "/sns/jscode2session"

# WeChat's documented error codes for jscode2session.
ERR_BUSY: Final = -1
ERR_INVALID_CODE: Final = 40029
ERR_CODE_USED: Final = 40163
ERR_RATE_LIMITED: Final = 45011
ERR_BLOCKED_USER: Final = 40226
# When to try again: "system busy" clears within a second or two; 45011 is the app's
# per-minute quota.
BUSY_RETRY_AFTER_S: Final = 1
RATE_LIMITED_RETRY_AFTER_S: Final = 60


class WeChatInvalidCodeError(UnauthorizedError):
    """WeChat does not know the login code (40029): call wx.login() again."""

    code = "wechat_invalid_code"
    default_message = "WeChat rejected the login code; call wx.login() again"


class WeChatCodeUsedError(UnauthorizedError):
    """The login code was already exchanged (40163): codes are single-use."""

    code = "wechat_code_used"
    default_message = "this WeChat login code was already used; call wx.login() again"


class WeChatUserBlockedError(ApiError):
    """WeChat flags this user as high-risk (40226) and refuses the login."""

    status = 403
    code = "wechat_user_blocked"
    default_message = "WeChat refused this user's login"


class WeChatRateLimitedError(ServiceUnavailableError):
    """The mini-program's WeChat quota is spent (45011): the app's, not the rider's."""

    code = "wechat_rate_limited"
    default_message = "WeChat sign-in is rate limited right now; retry in a minute"


class WeChatBusyError(ServiceUnavailableError):
    """WeChat answered "system busy" (-1)."""

    code = "wechat_busy"
    default_message = "WeChat is busy; retry in a moment"


class WeChatUnavailableError(ApiError):
    """WeChat did not answer, or answered something that is not a login."""

    status = 502
    code = "wechat_unavailable"
    default_message = "WeChat sign-in is unavailable; retry later"


class WeChatNotConfiguredError(ServiceUnavailableError):
    """This API has no AppID/AppSecret (development without WeChat)."""

    code = "wechat_not_configured"
    default_message = "WeChat sign-in is not configured on this server"


Identifier = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,128}$")]


class _Reply(BaseModel):
    model_config = ConfigDict(extra="ignore")

    errcode: int = 0
    errmsg: str = ""
    openid: Identifier | None = None
    unionid: Identifier | None = None
    session_key: str | None = Field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class WeChatSession:
    """Who the rider is to WeChat."""

    openid: str
    unionid: str | None
    session_key: str = field(repr=False)


class WeChatClient:
    """Calls jscode2session with the mini-program's AppID and AppSecret."""

    def __init__(self, http: httpx.AsyncClient, *, appid: str, secret: SecretStr) -> None:
        self._http = http
        self._appid = appid
        self._secret = secret

    @property
    def configured(self) -> bool:
        """Whether an AppID and AppSecret are set."""
        return bool(self._appid and self._secret.get_secret_value())

    async def code_to_session(self, code: str) -> WeChatSession:
        """Exchange a login code for the rider's identity, or raise a WeChat ApiError."""
        if not self.configured:
            raise WeChatNotConfiguredError
        params = {
            "appid": self._appid,
            "secret": self._secret.get_secret_value(),
            "js_code": code,
            "grant_type": "authorization_code",
        }
        try:
            response = await self._http.get(JSCODE2SESSION_PATH, params=params)
        except httpx.HTTPError as exc:
            # The URL holds the secret: log the error's type, never the request.
            log.warning("jscode2session failed: %s", type(exc).__name__)
            raise WeChatUnavailableError from exc
        if response.status_code != httpx.codes.OK:
            log.warning("jscode2session answered HTTP %d", response.status_code)
            raise WeChatUnavailableError
        try:
            reply = _Reply.model_validate_json(response.content)
        except ValidationError as exc:
            log.warning("jscode2session answered something that is not a login reply")
            raise WeChatUnavailableError from exc
        return _session_or_raise(reply)


def _session_or_raise(reply: _Reply) -> WeChatSession:
    if reply.errcode == 0 and reply.openid and reply.session_key:
        return WeChatSession(reply.openid, reply.unionid, reply.session_key)
    # errmsg ends with WeChat's request id ("rid: ..."), which WeChat support asks for.
    log.info("jscode2session errcode %d: %s", reply.errcode, reply.errmsg[:200])
    if reply.errcode == ERR_INVALID_CODE:
        raise WeChatInvalidCodeError
    if reply.errcode == ERR_CODE_USED:
        raise WeChatCodeUsedError
    if reply.errcode == ERR_BLOCKED_USER:
        raise WeChatUserBlockedError
    if reply.errcode == ERR_RATE_LIMITED:
        raise WeChatRateLimitedError(headers={"Retry-After": str(RATE_LIMITED_RETRY_AFTER_S)})
    if reply.errcode == ERR_BUSY:
        raise WeChatBusyError(headers={"Retry-After": str(BUSY_RETRY_AFTER_S)})
    if reply.errcode == 0:
        log.warning("jscode2session answered without an openid or session_key")
    else:
        # 40013 bad AppID, 40125 bad AppSecret...: our configuration, worth an operator's eye.
        log.error("jscode2session refused our credentials or request: errcode %d", reply.errcode)
    raise WeChatUnavailableError(details={"wechat_errcode": reply.errcode})
