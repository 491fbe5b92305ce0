"""A configurable HTTP provider for SMS gateways and app push services: one JSON request per message, built
from the message's fields by a small template in OPTIONS, through one `requests.Session` (its connection
pool kept between batches).

    "sms": {
        "BACKEND": "campaigns.providers.http.HttpProvider",
        "OPTIONS": {
            "URL": "https://sms.example.com/v1/messages",
            "AUTH": {"TYPE": "bearer", "TOKEN": env("SMS_TOKEN")},   # or basic USERNAME/PASSWORD, or header NAME/VALUE
            "PAYLOAD": {"to": "{{ address }}", "text": "{{ content.text }}", "ref": "{{ idempotency_key }}"},
            "TIMEOUT": 10,
            "MESSAGE_ID_FIELD": "data.id",             # where the gateway's id is in its JSON answer
            # Gateways that answer 200 with an error code in the body:
            "ERROR_FIELD": "code", "SUCCESS_VALUES": ["OK"],
            "ERRORS": {"MOBILE_NUMBER_ILLEGAL": "invalid", "BUSINESS_LIMIT_CONTROL": "retry"},
        },
        "RATE": 100,
    }

A template string that is exactly one `{{ path }}` is replaced by the value itself (a dict stays a dict);
inside a longer string it is replaced by its text. Paths start at message_id, idempotency_key, channel,
address, language, content or headers. A path the message does not have fails that message (PERMANENT,
"payload"), naming the path.

Answers: a timeout, a connection error, a 5xx or a 429 are retried later (Retry-After honoured; 429 and
503 also cool the provider down); any other 4xx is permanent. Every request carries the message's
idempotency key in a header (IDEMPOTENCY_HEADER, "Idempotency-Key" by default), so a retry after a
timeout is a no-op at a gateway that dedupes; set IDEMPOTENCY_HEADER to "" for one that does not, and a
timeout after the request went out is then UNKNOWN (to reconcile), not resent."""

from __future__ import annotations

import email.utils
import re
from datetime import UTC, datetime

import requests

from campaigns.providers.base import Outcome, OutgoingMessage, Provider, SendResult
from campaigns.providers.results import not_attempted, truncate_detail

_REF = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_\-]+)*)\s*\}\}")
ROOTS = {"message_id", "idempotency_key", "channel", "address", "language", "content", "headers"}
ERROR_KINDS = {"retry", "invalid", "unsubscribed", "permanent"}
OPTION_KEYS = {
    "URL",
    "METHOD",
    "AUTH",
    "HEADERS",
    "PAYLOAD",
    "TIMEOUT",
    "IDEMPOTENCY_HEADER",
    "MESSAGE_ID_FIELD",
    "ERROR_FIELD",
    "SUCCESS_VALUES",
    "ERRORS",
}


class PayloadError(ValueError):
    pass


def _refs(template) -> list[str]:
    if isinstance(template, dict):
        return [r for v in template.values() for r in _refs(v)]
    if isinstance(template, list):
        return [r for v in template for r in _refs(v)]
    if isinstance(template, str):
        return _REF.findall(template)
    return []


def _lookup(values: dict, path: str):
    node = values
    for part in path.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise PayloadError(f"the message has no {path}")
    return node


def payload_render(template, values: dict):
    """The template with every {{ path }} replaced from `values` (see the module docstring)."""
    if isinstance(template, dict):
        return {k: payload_render(v, values) for k, v in template.items()}
    if isinstance(template, list):
        return [payload_render(v, values) for v in template]
    if isinstance(template, str):
        whole = _REF.fullmatch(template.strip())
        if whole:
            return _lookup(values, whole.group(1))
        return _REF.sub(lambda m: _as_text(_lookup(values, m.group(1))), template)
    return template


def _as_text(value) -> str:
    return "" if value is None else str(value)


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:  # an HTTP date
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


class HttpProvider(Provider):
    @classmethod
    def options_problems(cls, options: dict) -> list[str]:
        problems = []
        unknown = set(options) - OPTION_KEYS
        if unknown:
            problems.append(f"unknown options {sorted(unknown)}; HttpProvider takes {sorted(OPTION_KEYS)}")
        url = options.get("URL")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            problems.append(f"URL must be an http:// or https:// address, not {url!r}")
        if str(options.get("METHOD", "POST")).upper() not in {"POST", "PUT"}:
            problems.append(f"METHOD must be POST or PUT, not {options.get('METHOD')!r}")
        auth = options.get("AUTH")
        if auth is not None:
            kind = auth.get("TYPE") if isinstance(auth, dict) else None
            needs = {"bearer": {"TOKEN"}, "basic": {"USERNAME", "PASSWORD"}, "header": {"NAME", "VALUE"}}
            if kind not in needs:
                problems.append("AUTH must be {'TYPE': 'bearer'|'basic'|'header', ...}")
            elif missing := needs[kind] - set(auth):
                problems.append(f"AUTH of TYPE {kind!r} needs {sorted(missing)}")
        payload = options.get("PAYLOAD")
        if not isinstance(payload, dict | list):
            problems.append("PAYLOAD must be a JSON object template, e.g. {'to': '{{ address }}'}")
        else:
            for ref in _refs(payload):
                if ref.split(".")[0] not in ROOTS:
                    problems.append(
                        f"PAYLOAD refers to {{{{ {ref} }}}}; paths start at {', '.join(sorted(ROOTS))}"
                    )
        timeout = options.get("TIMEOUT", 10)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            problems.append(f"TIMEOUT must be a number of seconds > 0, not {timeout!r}")
        errors = options.get("ERRORS", {})
        if not isinstance(errors, dict) or any(v not in ERROR_KINDS for v in errors.values()):
            problems.append(f"ERRORS must map the gateway's codes to one of {sorted(ERROR_KINDS)}")
        elif errors and not options.get("ERROR_FIELD"):
            problems.append("ERRORS needs ERROR_FIELD: where the code is in the answer")
        return problems

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._session: requests.Session | None = None

    @property
    def supports_idempotency(self) -> bool:  # type: ignore[override]
        return bool(self.options.get("IDEMPOTENCY_HEADER", "Idempotency-Key"))

    @property
    def session(self) -> requests.Session:
        if self._session is None:
            session = requests.Session()
            session.headers.update({"Content-Type": "application/json; charset=utf-8"})
            session.headers.update(self.options.get("HEADERS") or {})
            auth = self.options.get("AUTH") or {}
            kind = auth.get("TYPE")
            if kind == "bearer":
                session.headers["Authorization"] = f"Bearer {auth['TOKEN']}"
            elif kind == "basic":
                session.auth = (auth["USERNAME"], auth["PASSWORD"])
            elif kind == "header":
                session.headers[auth["NAME"]] = auth["VALUE"]
            self._session = session
        return self._session

    def close(self) -> None:
        pass  # the session's pool is kept for the next batch

    def send_batch(self, messages: list[OutgoingMessage], *, now: datetime) -> list[SendResult]:
        results: list[SendResult] = []
        for index, message in enumerate(messages):
            result = self._send_one(message)
            results.append(result)
            if result.cool_down:
                results.extend(not_attempted(messages[index + 1 :], because=result))
                break
        return results

    def _send_one(self, message: OutgoingMessage) -> SendResult:
        mid = message.message_id
        values = {
            "message_id": message.message_id,
            "idempotency_key": message.idempotency_key,
            "channel": message.channel,
            "address": message.address,
            "language": message.language,
            "content": message.content or {},
            "headers": message.headers or {},
        }
        try:
            body = payload_render(self.options["PAYLOAD"], values)
        except PayloadError as exc:
            return SendResult(
                message_id=mid, outcome=Outcome.PERMANENT, error_code="payload", error_detail=str(exc)
            )
        headers = {}
        idempotency_header = self.options.get("IDEMPOTENCY_HEADER", "Idempotency-Key")
        if idempotency_header:
            headers[idempotency_header] = message.idempotency_key
        try:
            response = self.session.request(
                str(self.options.get("METHOD", "POST")).upper(),
                self.options["URL"],
                json=body,
                headers=headers,
                timeout=self.options.get("TIMEOUT", 10),
            )
        except requests.ConnectTimeout as exc:  # the request never left: safe to retry, whatever the gateway
            return SendResult(
                message_id=mid, outcome=Outcome.RETRY, error_code="timeout", error_detail=truncate_detail(exc)
            )
        except requests.Timeout as exc:
            if not idempotency_header:
                return SendResult(
                    message_id=mid,
                    outcome=Outcome.UNKNOWN,
                    error_code="no_answer",
                    error_detail=truncate_detail(exc),
                )
            return SendResult(
                message_id=mid, outcome=Outcome.RETRY, error_code="timeout", error_detail=truncate_detail(exc)
            )
        except requests.RequestException as exc:  # connection refused, reset, DNS: the gateway is not there
            return SendResult(
                message_id=mid,
                outcome=Outcome.RETRY,
                error_code="connection",
                error_detail=truncate_detail(exc),
                cool_down=isinstance(exc, requests.ConnectionError),
            )
        return self._classify(message, response)

    def _classify(self, message: OutgoingMessage, response: requests.Response) -> SendResult:
        mid = message.message_id
        status = response.status_code
        detail = truncate_detail(response.text or response.reason)
        if status == 429 or status >= 500:
            return SendResult(
                message_id=mid,
                outcome=Outcome.RETRY,
                error_code=str(status),
                error_detail=detail,
                retry_after=_retry_after(response),
                cool_down=status in (429, 503),
            )
        if status >= 400:
            return SendResult(
                message_id=mid, outcome=Outcome.PERMANENT, error_code=str(status), error_detail=detail
            )
        try:
            answer = response.json() if response.content else {}
        except ValueError:
            answer = {}
        error_field = self.options.get("ERROR_FIELD")
        if error_field:
            try:
                code = str(_lookup(answer, error_field))
            except PayloadError:
                code = ""
            if code not in [str(v) for v in self.options.get("SUCCESS_VALUES", ["0", "OK", "ok"])]:
                kind = self.options.get("ERRORS", {}).get(code, "permanent")
                if kind == "retry":
                    return SendResult(
                        message_id=mid,
                        outcome=Outcome.RETRY,
                        error_code=code,
                        error_detail=detail,
                        retry_after=_retry_after(response),
                    )
                return SendResult(
                    message_id=mid,
                    outcome=Outcome.PERMANENT,
                    error_code=code or "unreadable",
                    error_detail=detail,
                    address_problem=kind if kind in ("invalid", "unsubscribed") else "",
                )
        provider_id = ""
        if field := self.options.get("MESSAGE_ID_FIELD"):
            try:
                provider_id = _as_text(_lookup(answer, field))
            except PayloadError:
                provider_id = ""
        return SendResult(message_id=mid, outcome=Outcome.SENT, provider_message_id=provider_id)
