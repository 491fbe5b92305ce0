"""WeChat official-account messages: template messages (`/cgi-bin/message/template/send`) and subscription
messages (`/cgi-bin/message/subscribe/bizsend` for an official account, `/cgi-bin/message/subscribe/send`
for a mini program).

    "wechat": {
        "BACKEND": "campaigns.providers.wechat.WeChatProvider",
        "OPTIONS": {"APPID": "wx...", "SECRET": env("WECHAT_SECRET"), "KIND": "template"},
        "RATE": 50,
    }

OPTIONS: APPID, SECRET (required); KIND "template" (default) or "subscribe"; SUBSCRIBE_API "bizsend"
(default) or "send"; BASE_URL (default https://api.weixin.qq.com; tests point it at a local server);
TIMEOUT (10 s); MINIPROGRAM_APPID (the mini program a `page` opens, for template messages); TRUNCATE
(default True: text fields too long for their type are cut with "…"; False refuses them); CACHE (the
cache alias the access token is shared in, "default").

Content: template_id, data ({"thing1": "积分到账"} or {"thing1": {"value": ...}}), and optionally url,
page, miniprogram {appid, pagepath}, kind (to override KIND for one message).

The access token comes from the stable-token endpoint and is shared by every worker through the Django
cache (so CACHE_URL must be a shared cache in production, which `check --deploy` already insists on):
one process fetches it while the others wait for it, and it is kept until a little before it expires.
On an expired or invalid token error (40001, 42001, 40014) the token is fetched again once and the
message retried once.

Guarantees: a template message carries `client_msg_id` = the message's idempotency key, and WeChat sends
one message per (openid, client_msg_id) within 10 minutes, so a retry after a timeout is safe. A
subscription message has no such key: a timeout after the request went out is UNKNOWN (to reconcile)."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from datetime import datetime

import requests
from django.core.cache import caches

from campaigns.providers.base import Outcome, OutgoingMessage, Provider, SendResult
from campaigns.providers.results import not_attempted, truncate_detail

logger = logging.getLogger("campaigns.providers.wechat")

DEFAULT_BASE_URL = "https://api.weixin.qq.com"
TOKEN_ERRORS = {40001, 42001, 40014}  # invalid credential, expired token, invalid token
COOL_DOWN_ERRORS = {-1, 45009}  # system busy, API quota reached
UNSUBSCRIBED_ERRORS = {43004, 43101}  # not following the account, refused the subscription message
INVALID_OPENID_ERRORS = {40003}
BAD_MESSAGE_ERRORS = {40037, 47003}  # invalid template_id, data fields not as the template wants
TOKEN_MARGIN = 300  # seconds before expires_in that the shared token is dropped

# Limits of the typed data fields (the key's name without its number: thing1 -> thing), in characters.
# Free text may be shortened with an ellipsis; a code, number or date cut short would be wrong, so those
# are refused instead.
TRUNCATABLE = {"thing": 20, "short_thing": 5}
STRICT = {
    "number": 32,
    "letter": 32,
    "symbol": 5,
    "character_string": 32,
    "phone_number": 17,
    "car_number": 8,
    "phrase": 5,
}
_KEY_TYPE = re.compile(r"^([a-z_]+?)\d+$")
OPTION_KEYS = {
    "APPID",
    "SECRET",
    "KIND",
    "SUBSCRIBE_API",
    "BASE_URL",
    "TIMEOUT",
    "MINIPROGRAM_APPID",
    "TRUNCATE",
    "CACHE",
}


class FieldTooLong(ValueError):
    pass


class TokenUnavailable(Exception):
    def __init__(self, code: str, detail: str):
        super().__init__(detail)
        self.code = code
        self.detail = detail


def data_fields(data: dict, *, truncate: bool) -> dict:
    """WeChat's {key: {"value": text}} from the rendered data, each value within its type's limit."""
    if not isinstance(data, dict):
        raise FieldTooLong(f"data must be a mapping of field to value, not {type(data).__name__}")
    out = {}
    for key, raw in data.items():
        value = raw.get("value") if isinstance(raw, dict) else raw
        value = "" if value is None else str(value)
        match = _KEY_TYPE.match(key)
        kind = match.group(1) if match else ""
        if kind == "name":  # 10 Chinese characters, or 20 letters
            limit = 20 if value.isascii() else 10
            if len(value) > limit:
                value = value[: limit - 1] + "…" if truncate else _too_long(key, kind, value, limit)
        elif kind in TRUNCATABLE and len(value) > TRUNCATABLE[kind]:
            limit = TRUNCATABLE[kind]
            value = value[: limit - 1] + "…" if truncate else _too_long(key, kind, value, limit)
        elif kind in STRICT and len(value) > STRICT[kind]:
            _too_long(key, kind, value, STRICT[kind])
        field = {"value": value}
        if isinstance(raw, dict) and "color" in raw:
            field["color"] = raw["color"]
        out[key] = field
    return out


def _too_long(key: str, kind: str, value: str, limit: int):
    raise FieldTooLong(f"data.{key} is {len(value)} characters; a {kind} field allows at most {limit}")


class WeChatProvider(Provider):
    @classmethod
    def options_problems(cls, options: dict) -> list[str]:
        problems = []
        unknown = set(options) - OPTION_KEYS
        if unknown:
            problems.append(f"unknown options {sorted(unknown)}; WeChatProvider takes {sorted(OPTION_KEYS)}")
        for key in ("APPID", "SECRET"):
            if not isinstance(options.get(key), str) or not options.get(key):
                problems.append(f"{key} is required (the official account's {key.lower()})")
        if options.get("KIND", "template") not in ("template", "subscribe"):
            problems.append(f"KIND must be 'template' or 'subscribe', not {options.get('KIND')!r}")
        if options.get("SUBSCRIBE_API", "bizsend") not in ("bizsend", "send"):
            problems.append(
                f"SUBSCRIBE_API must be 'bizsend' or 'send', not {options.get('SUBSCRIBE_API')!r}"
            )
        base = options.get("BASE_URL", DEFAULT_BASE_URL)
        if not isinstance(base, str) or not base.startswith(("http://", "https://")):
            problems.append(f"BASE_URL must be an http(s) address, not {base!r}")
        return problems

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._session: requests.Session | None = None

    @property
    def supports_idempotency(self) -> bool:  # type: ignore[override]
        return self.options.get("KIND", "template") == "template"

    @property
    def base_url(self) -> str:
        return self.options.get("BASE_URL", DEFAULT_BASE_URL).rstrip("/")

    @property
    def session(self) -> requests.Session:
        if self._session is None:
            self._session = requests.Session()
        return self._session

    @property
    def timeout(self) -> float:
        return self.options.get("TIMEOUT", 10)

    # --- the shared access token -----------------------------------------------------------------

    @property
    def _cache(self):
        return caches[self.options.get("CACHE", "default")]

    @property
    def _token_key(self) -> str:
        return f"campaigns:wechat:token:{self.options['APPID']}"

    def access_token(self, *, stale: str | None = None, wait: float = 15.0) -> str:
        """The shared token; `stale` is one WeChat just refused, which is then replaced (once, by one
        process: the others find the new one in the cache)."""
        cache = self._cache
        lock_key = self._token_key + ":lock"
        deadline = time.monotonic() + wait
        while True:
            token = cache.get(self._token_key)
            if token and token != stale:
                return token
            owner = uuid.uuid4().hex
            if cache.add(lock_key, owner, timeout=int(self.timeout) + 5):
                try:
                    token = cache.get(self._token_key)
                    if token and token != stale:
                        return token
                    token, expires_in = self._fetch_token(force=False)
                    if stale and token == stale:
                        # WeChat still calls it valid in normal mode while refusing it: force a new one.
                        token, expires_in = self._fetch_token(force=True)
                    cache.set(self._token_key, token, timeout=max(60, int(expires_in) - TOKEN_MARGIN))
                    return token
                finally:
                    if cache.get(lock_key) == owner:
                        cache.delete(lock_key)
            if time.monotonic() > deadline:  # the fetching process died or hangs: fetch ourselves
                token, expires_in = self._fetch_token(force=False)
                cache.set(self._token_key, token, timeout=max(60, int(expires_in) - TOKEN_MARGIN))
                return token
            time.sleep(0.05)

    def _fetch_token(self, *, force: bool) -> tuple[str, int]:
        body = {
            "grant_type": "client_credential",
            "appid": self.options["APPID"],
            "secret": self.options["SECRET"],
            "force_refresh": force,
        }
        try:
            response = self.session.post(
                f"{self.base_url}/cgi-bin/stable_token", json=body, timeout=self.timeout
            )
        except requests.RequestException as exc:
            raise TokenUnavailable(
                "token_timeout" if isinstance(exc, requests.Timeout) else "token_connection", str(exc)
            ) from exc
        try:
            answer = response.json()
        except ValueError:
            raise TokenUnavailable(
                f"token_http_{response.status_code}", truncate_detail(response.text)
            ) from None
        if not answer.get("access_token"):
            raise TokenUnavailable(
                str(answer.get("errcode", "token_error")), truncate_detail(answer.get("errmsg", answer))
            )
        logger.info("wechat access token fetched for %s (force=%s)", self.options["APPID"], force)
        return answer["access_token"], int(answer.get("expires_in", 7200))

    # --- sending -------------------------------------------------------------------------------

    def send_batch(self, messages: list[OutgoingMessage], *, now: datetime) -> list[SendResult]:
        results: list[SendResult] = []
        refreshed = False
        for index, message in enumerate(messages):
            try:
                token = self.access_token()
                result, code = self._send_one(message, token)
                if code in TOKEN_ERRORS and not refreshed:
                    refreshed = True
                    token = self.access_token(stale=token)
                    result, code = self._send_one(message, token)
                if code in TOKEN_ERRORS:  # refused again with a fresh token: the credentials are wrong
                    result = SendResult(
                        message_id=message.message_id,
                        outcome=Outcome.RETRY,
                        error_code=str(code),
                        error_detail=result.error_detail,
                        cool_down=True,
                    )
            except TokenUnavailable as exc:
                result = SendResult(
                    message_id=message.message_id,
                    outcome=Outcome.RETRY,
                    error_code=exc.code,
                    error_detail=truncate_detail(f"no access token: {exc.detail}"),
                    cool_down=True,
                )
            results.append(result)
            if result.cool_down:
                results.extend(not_attempted(messages[index + 1 :], because=result))
                break
        return results

    def _request(self, message: OutgoingMessage) -> tuple[str, dict]:
        content = message.content or {}
        kind = content.get("kind") or self.options.get("KIND", "template")
        if kind not in ("template", "subscribe"):
            raise FieldTooLong(f"kind must be 'template' or 'subscribe', not {kind!r}")
        if not content.get("template_id"):
            raise FieldTooLong("the message has no template_id")
        body = {
            "touser": message.address,
            "template_id": content["template_id"],
            "data": data_fields(content.get("data") or {}, truncate=self.options.get("TRUNCATE", True)),
        }
        miniprogram = content.get("miniprogram")
        if not miniprogram and content.get("page") and self.options.get("MINIPROGRAM_APPID"):
            miniprogram = {"appid": self.options["MINIPROGRAM_APPID"], "pagepath": content["page"]}
        if kind == "template":
            if content.get("url"):
                body["url"] = content["url"]
            if miniprogram:
                body["miniprogram"] = miniprogram
            body["client_msg_id"] = message.idempotency_key
            return "/cgi-bin/message/template/send", body
        api = self.options.get("SUBSCRIBE_API", "bizsend")
        page = content.get("page") or content.get("url")
        if page:
            body["page"] = page
        if miniprogram and api == "bizsend":
            body["miniprogram"] = miniprogram
        return f"/cgi-bin/message/subscribe/{api}", body

    def _send_one(self, message: OutgoingMessage, token: str) -> tuple[SendResult, int | None]:
        mid = message.message_id
        try:
            path, body = self._request(message)
        except FieldTooLong as exc:
            return SendResult(
                message_id=mid, outcome=Outcome.PERMANENT, error_code="bad_data", error_detail=str(exc)
            ), None
        try:
            response = self.session.post(
                f"{self.base_url}{path}",
                params={"access_token": token},
                # WeChat wants the text as UTF-8, not \u escapes.
                data=json.dumps(body, ensure_ascii=False).encode("utf-8"),
                headers={"Content-Type": "application/json; charset=utf-8"},
                timeout=self.timeout,
            )
        except requests.ConnectTimeout as exc:
            return SendResult(
                message_id=mid, outcome=Outcome.RETRY, error_code="timeout", error_detail=truncate_detail(exc)
            ), None
        except requests.Timeout as exc:
            if "client_msg_id" in body:
                return SendResult(
                    message_id=mid,
                    outcome=Outcome.RETRY,
                    error_code="timeout",
                    error_detail=truncate_detail(exc),
                ), None
            return SendResult(
                message_id=mid,
                outcome=Outcome.UNKNOWN,
                error_code="no_answer",
                error_detail=truncate_detail(exc),
            ), None
        except requests.RequestException as exc:
            return (
                SendResult(
                    message_id=mid,
                    outcome=Outcome.RETRY,
                    error_code="connection",
                    error_detail=truncate_detail(exc),
                    cool_down=True,
                ),
                None,
            )
        if response.status_code >= 500 or response.status_code == 429:
            return (
                SendResult(
                    message_id=mid,
                    outcome=Outcome.RETRY,
                    error_code=str(response.status_code),
                    error_detail=truncate_detail(response.text),
                    cool_down=True,
                ),
                None,
            )
        try:
            answer = response.json()
            code = int(answer.get("errcode", 0))
        except (ValueError, TypeError, AttributeError):
            return (
                SendResult(
                    message_id=mid,
                    outcome=Outcome.RETRY,
                    error_code=f"http_{response.status_code}",
                    error_detail=truncate_detail(response.text),
                ),
                None,
            )
        return self._classify(mid, code, str(answer.get("errmsg", "")), answer), code

    @staticmethod
    def _classify(mid: int, code: int, errmsg: str, answer: dict) -> SendResult:
        detail = truncate_detail(f"{code} {errmsg}")
        if code == 0:
            return SendResult(
                message_id=mid, outcome=Outcome.SENT, provider_message_id=str(answer.get("msgid", "") or "")
            )
        if code in COOL_DOWN_ERRORS:
            return SendResult(
                message_id=mid,
                outcome=Outcome.RETRY,
                error_code=str(code),
                error_detail=detail,
                cool_down=True,
            )
        if code in UNSUBSCRIBED_ERRORS:
            return SendResult(
                message_id=mid,
                outcome=Outcome.PERMANENT,
                error_code=str(code),
                error_detail=detail,
                address_problem="unsubscribed",
            )
        if code in INVALID_OPENID_ERRORS:
            return SendResult(
                message_id=mid,
                outcome=Outcome.PERMANENT,
                error_code=str(code),
                error_detail=detail,
                address_problem="invalid",
            )
        if code in BAD_MESSAGE_ERRORS:
            return SendResult(
                message_id=mid, outcome=Outcome.PERMANENT, error_code=str(code), error_detail=detail
            )
        if code in TOKEN_ERRORS:
            return SendResult(
                message_id=mid, outcome=Outcome.RETRY, error_code=str(code), error_detail=detail
            )
        # An errcode we do not know (a permission, a new limit): retried, within the outbox's bounded attempts,
        # rather than losing the message on a guess.
        return SendResult(message_id=mid, outcome=Outcome.RETRY, error_code=str(code), error_detail=detail)
