"""Saving message templates (every content change is a new immutable version), checking them field by
field with the line of each problem, previewing them for a customer, and test sends.

A version is only ever written through `template_save`, which refuses content with any problem: a syntax
error, a variable the personalisation context does not have (CONTEXT_SCHEMA; `default()` and `is
defined` guard an unknown one, as under Jinja's StrictUndefined), an unsafe or exploding expression met
by a trial render, a required field left empty, a WeChat data key or value WeChat would refuse."""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime

from django.conf import settings
from django.db import transaction
from django.db.models import Max
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from jinja2 import nodes

from campaigns.models import Channel, DeliverySettings, MessagePurpose, MessageTemplate, TemplateVersion
from campaigns.rendering import (
    CHANNEL_FIELDS,
    WECHAT_KEY,
    TemplateProblem,
    content_render,
    render_compiled,
    template_compile,
    template_parse,
    version_compile,
    wechat_value_limit,
)
from campaigns.services.outbox import MessageRequest, message_send_now
from campaigns.services.personalisation import (
    CONTEXT_SCHEMA,
    SAMPLE_COUPON_CODE,
    TEMPLATE_GLOBALS,
    UNSUBSCRIBE_PLACEHOLDER,
    preview_context,
)
from campaigns.services.tracking import sms_opt_out_appended

# Problems a trial render with the sample context reports: the template's own fault whatever the
# customer. Type errors against sample values ("render_error") are not: real data may differ.
_TRIAL_PROBLEMS = frozenset(
    {
        "unsafe",
        "value_too_big",
        "number_too_big",
        "range_too_big",
        "width_too_big",
        "too_many_steps",
        "too_slow",
        "output_too_long",
    }
)
_GUARD_FILTERS = frozenset({"default", "d"})
_GUARD_TESTS = frozenset({"defined", "undefined", "none"})

SAMPLE_CONTEXT = {
    "customer": {
        "id": 1,
        "name": "王芳",
        "email": "wang.fang@example.cn",
        "phone": "+8613800000000",
        "external_id": "C0000001",
        "city": "上海",
        "region": "上海",
        "birthday": "1990-05-01",
        "gender": "female",
        "language": "zh-hans",
        "time_zone": "Asia/Shanghai",
        "tier": "金卡",
    },
    "metrics": {
        "lifecycle_stage": "active",
        "lifecycle_stage_label": "活跃客户",
        "value_tier": "high",
        "value_tier_label": "高价值",
        "rfm_segment": "champions",
        "rfm_segment_label": "重要价值客户",
        "predicted_value": "1288.00",
        "churn_risk": 0.12,
        "order_count": 8,
        "total_spend": "2399.00",
        "last_order_date": "2026-11-11",
        "days_since_last_order": 26,
        "expected_next_purchase": "2026-12-20",
    },
    "loyalty": {
        "member": True,
        "balance": 1200,
        "pending": 80,
        "tier": "金卡",
        "tier_code": "gold",
        "expiring_points": 300,
        "expiring_last_day": "2026-12-31",
    },
    "coupon": {
        "code": SAMPLE_COUPON_CODE,
        "code_display": "TEST-0000-0000",
        "valid_until": "2026-12-31",
        "discount": "20.00",
        "programme": "回归礼券",
    },
    "recommendations": [
        {"name": "婴儿湿巾", "sku": "SKU-00001", "category": "baby", "price": "39.00"},
        {"name": "面霜", "sku": "SKU-00002", "category": "beauty", "price": "199.00"},
    ],
    "data": {},
    "links": {"site": "http://127.0.0.1:8000", "unsubscribe": UNSUBSCRIBE_PLACEHOLDER},
    "today": "2026-12-07",
}


@dataclass(frozen=True)
class FieldProblem:
    """A problem with one field of one language: `field` is "subject", "html", "text", "title", "body",
    "template_id", "kind", "page", "url", "data" or ("data", key)."""

    language: str
    field: str | tuple
    problem: TemplateProblem

    @property
    def field_name(self) -> str:
        return "/".join(self.field) if isinstance(self.field, tuple) else self.field

    def __str__(self) -> str:
        return f"{self.language} {self.field_name}: {self.problem.text()}"


class TemplateInvalid(Exception):
    def __init__(self, problems: list[FieldProblem]):
        self.problems = problems
        super().__init__("; ".join(str(p) for p in problems))


def content_fingerprint(content: dict) -> str:
    return hashlib.sha256(json.dumps(content, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


# --- Checking -------------------------------------------------------------------------------------


def _guarded_nodes(tree: nodes.Template) -> tuple[set[int], set[str]]:
    """The expression nodes wrapped in `default()` (by id), and the names tested with `is defined`
    anywhere (`{% if promo is defined %}{{ promo }}{% endif %}`): an unknown variable there is allowed,
    as StrictUndefined allows it."""
    guarded: set[int] = set()
    names_tested: set[str] = set()
    for node in tree.find_all((nodes.Filter, nodes.Test)):
        if node.node is None:
            continue
        if isinstance(node, nodes.Filter) and node.name in _GUARD_FILTERS:
            guarded.add(id(node.node))
            guarded |= {id(n) for n in node.node.find_all(nodes.Expr)}
        elif isinstance(node, nodes.Test) and node.name in _GUARD_TESTS:
            guarded.add(id(node.node))
            if isinstance(node.node, nodes.Name):
                names_tested.add(node.node.name)
    return guarded, names_tested


def unknown_variables(source: str, *, html: bool = False) -> list[TemplateProblem]:
    """The variables a source reads that the personalisation context does not have, each with its line
    (first use). Syntax errors are raised as a TemplateProblem."""
    from jinja2.meta import find_undeclared_variables

    tree = template_parse(source, html=html)
    undeclared = find_undeclared_variables(tree)
    guarded, names_tested = _guarded_nodes(tree)
    problems: dict[str, TemplateProblem] = {}

    def report(name: str, line: int) -> None:
        if name not in problems:
            problems[name] = TemplateProblem("unknown_variable", line=line, name=name)

    for node in tree.find_all(nodes.Name):
        if node.ctx != "load" or node.name not in undeclared or id(node) in guarded:
            continue
        if node.name in names_tested:
            continue
        if node.name not in CONTEXT_SCHEMA and node.name not in TEMPLATE_GLOBALS:
            report(node.name, node.lineno)
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        base = node.node
        if not isinstance(base, nodes.Name) or base.name not in undeclared or id(node) in guarded:
            continue
        keys = CONTEXT_SCHEMA.get(base.name)
        if keys is None:
            continue  # free-form (data, recommendations) or not a context name (reported above)
        if isinstance(node, nodes.Getattr):
            attr = node.attr
        elif isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
            attr = node.arg.value
        else:
            continue
        if attr not in keys and not _is_method_of_dict(attr):
            report(f"{base.name}.{attr}", node.lineno)
    return sorted(problems.values(), key=lambda p: (p.line or 0, p.params["name"]))


def _is_method_of_dict(attr: str) -> bool:
    return attr in {"items", "keys", "values", "get"}


def _check_source(source: str, *, html: bool) -> list[TemplateProblem]:
    try:
        problems = unknown_variables(source, html=html)
    except TemplateProblem as problem:
        return [problem]
    if problems:
        return problems
    try:
        render_compiled(template_compile(source, html=html), SAMPLE_CONTEXT)
    except TemplateProblem as problem:
        if problem.code in _TRIAL_PROBLEMS:
            return [problem]
    return []


def _languages() -> list[str]:
    return [code for code, _name in settings.LANGUAGES]


def content_check(*, channel: str, content, coupon_programme=None) -> list[FieldProblem]:
    """Every problem of every field of every language of `content` for a template of `channel`."""
    found: list[FieldProblem] = []
    if not isinstance(content, dict) or not content:
        return [FieldProblem("", "content", TemplateProblem("required"))]
    uses_coupon = False
    for language, fields in content.items():
        if language not in _languages():
            found.append(FieldProblem(language, "language", TemplateProblem("render_error", detail=str(
                _("%(language)s is not one of the languages (%(known)s)")
                % {"language": language, "known": ", ".join(_languages())}
            ))))  # fmt: skip
            continue
        if not isinstance(fields, dict):
            found.append(FieldProblem(language, "content", TemplateProblem("required")))
            continue
        for name, html, required in CHANNEL_FIELDS.get(channel, ()):
            source = fields.get(name) or ""
            if not isinstance(source, str):
                source = str(source)
            if not source.strip():
                if required:
                    found.append(FieldProblem(language, name, TemplateProblem("required")))
                continue
            found += [FieldProblem(language, name, p) for p in _check_source(source, html=html)]
            uses_coupon |= _uses(source, "coupon", html=html)
        if (
            channel == "email"
            and not (fields.get("html") or "").strip()
            and not (fields.get("text") or "").strip()
        ):
            found.append(FieldProblem(language, "text", TemplateProblem("required")))
        if channel == "wechat":
            found += _wechat_check(language, fields)
            uses_coupon |= any(_uses(str(s), "coupon") for s in (fields.get("data") or {}).values())
    if uses_coupon and coupon_programme is None:
        found.append(FieldProblem("", "coupon_programme", TemplateProblem("coupon_programme")))
    return found


def _uses(source: str, name: str, *, html: bool = False) -> bool:
    try:
        return any(n.name == name for n in template_parse(source, html=html).find_all(nodes.Name))
    except TemplateProblem:
        return False


def _wechat_check(language: str, fields: dict) -> list[FieldProblem]:
    found = []
    if not str(fields.get("template_id") or "").strip():
        found.append(FieldProblem(language, "template_id", TemplateProblem("required")))
    kind = fields.get("kind") or "template"
    if kind not in ("template", "subscribe"):
        found.append(FieldProblem(language, "kind", TemplateProblem("wechat_kind")))
        kind = "template"
    data = fields.get("data") or {}
    if not isinstance(data, dict) or not data:
        found.append(FieldProblem(language, "data", TemplateProblem("required")))
        return found
    for key, source in data.items():
        if not WECHAT_KEY.match(str(key)):
            found.append(FieldProblem(language, ("data", str(key)), TemplateProblem("wechat_key", key=key)))
            continue
        source = str(source)
        problems = _check_source(source, html=False)
        found += [FieldProblem(language, ("data", key), p) for p in problems]
        if problems:
            continue
        limit = wechat_value_limit(kind, key)
        try:
            value = render_compiled(template_compile(source), SAMPLE_CONTEXT).strip()
        except TemplateProblem:
            continue
        if len(value) > limit:
            found.append(
                FieldProblem(
                    language,
                    ("data", key),
                    TemplateProblem("wechat_length", key=key, length=len(value), limit=limit, kind=kind),
                )
            )
    return found


def content_normalise(*, channel: str, content: dict) -> dict:
    """The content as stored: only the channel's fields, languages in settings.LANGUAGES order, strings
    with Windows line ends made plain (so the fingerprint does not see a browser's CRLF as a change)."""

    def clean(value):
        return str(value or "").replace("\r\n", "\n")

    out = {}
    order = {code: i for i, code in enumerate(_languages())}
    for language in sorted(content, key=lambda code: order.get(code, len(order))):
        fields = content[language] or {}
        kept = {name: clean(fields.get(name)) for name, _html, _req in CHANNEL_FIELDS.get(channel, ())}
        if channel == "wechat":
            kept["template_id"] = clean(fields.get("template_id")).strip()
            kept["kind"] = clean(fields.get("kind")).strip() or "template"
            kept["data"] = {str(k).strip(): clean(v) for k, v in (fields.get("data") or {}).items()}
        out[language] = kept
    return out


# --- Saving ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TemplateSaved:
    template: MessageTemplate
    version: TemplateVersion
    created_version: bool


def template_save(
    *,
    template: MessageTemplate,
    content: dict,
    user=None,
    now: datetime | None = None,
) -> TemplateSaved:
    """Save a template (new or changed attributes on `template`) and its content. A new version is made
    when the content differs from the current version's (by fingerprint); the same content keeps the
    version. Raises TemplateInvalid listing every problem, and saves nothing then."""
    now = now or timezone.now()
    if template.channel not in CHANNEL_FIELDS:
        raise TemplateInvalid([FieldProblem("", "channel", TemplateProblem("required"))])
    content = (
        content_normalise(channel=template.channel, content=content) if isinstance(content, dict) else content
    )
    problems = content_check(
        channel=template.channel, content=content, coupon_programme=template.coupon_programme
    )
    if problems:
        raise TemplateInvalid(problems)
    fingerprint = content_fingerprint(content)
    with transaction.atomic():
        if template.pk:
            # Locked: two staff saving at once would otherwise both take the next number.
            MessageTemplate.objects.select_for_update().filter(pk=template.pk).first()
        template.save()
        current = (
            TemplateVersion.objects.filter(pk=template.current_version_id).first()
            if template.current_version_id
            else None
        )
        if current is not None and current.fingerprint == fingerprint:
            return TemplateSaved(template=template, version=current, created_version=False)
        number = (TemplateVersion.objects.filter(template=template).aggregate(n=Max("number"))["n"] or 0) + 1
        version = TemplateVersion.objects.create(
            template=template,
            number=number,
            content=content,
            fingerprint=fingerprint,
            created_at=now,
            created_by=user if getattr(user, "pk", None) else None,
        )
        template.current_version = version
        template.save(update_fields=["current_version", "updated_at"])
    return TemplateSaved(template=template, version=version, created_version=True)


# --- Preview and test send ------------------------------------------------------------------------


@dataclass
class PreviewVariant:
    language: str
    content: dict = field(default_factory=dict)
    problem: TemplateProblem | None = None
    chosen: bool = False  # the variant this customer would get


def template_preview(
    *, version: TemplateVersion, customer, data: dict | None = None, now: datetime | None = None
) -> list[PreviewVariant]:
    """Every language variant of `version` rendered for `customer` (sample coupon, nothing issued), the
    one the customer would get marked `chosen`. A problem is shown on its variant, never raised."""
    now = now or timezone.now()
    try:
        compiled = version_compile(
            version_id=version.pk, channel=version.template.channel, content=version.content
        )
    except TemplateProblem as problem:
        return [PreviewVariant(language="", problem=problem)]
    wanted, context = preview_context(
        template=version.template,
        customer=customer,
        language="",
        data=data or {},
        needs=compiled.needs,
        now=now,
    )
    chosen = compiled.language_for(wanted)
    # What is sent, not only what the template says: a marketing SMS ends in the opt-out words the
    # pipeline adds (campaigns/services/tracking.py), read once for every variant.
    opt_out_settings = (
        DeliverySettings.current()
        if version.template.channel == Channel.SMS and version.template.purpose == MessagePurpose.MARKETING
        else None
    )
    variants = []
    for language in compiled.languages:
        variant = PreviewVariant(language=language, chosen=language == chosen)
        try:
            variant.content = content_render(compiled, language, context)
        except TemplateProblem as problem:
            variant.problem = problem
        else:
            if opt_out_settings is not None and "text" in variant.content:
                variant.content["text"] = sms_opt_out_appended(
                    str(variant.content["text"]), language, delivery_settings=opt_out_settings
                )
        variants.append(variant)
    return variants


def template_test_send(
    *, template: MessageTemplate, customer, address: str, data: dict | None = None, user=None, now=None
):
    """Send the template's current version, personalised for `customer`, to a staff address or phone,
    through the pipeline (purpose "test": no customer's caps counted, no coupon issued). Returns the
    outbox's message."""
    now = now or timezone.now()
    request = MessageRequest(
        customer_id=customer.pk,
        channel=template.channel,
        template_id=template.pk,
        source_kind="staff",
        source_ref=f"test:{getattr(user, 'pk', '') or ''}",
        occurrence=uuid.uuid4().hex,
        purpose="test",
        # The template's own name: "test send" is the purpose, shown as such in the reader's language.
        source_label=template.name[:200],
        data=data or {},
        address=address,
    )
    message, _created = message_send_now(request=request, now=now)
    return message
