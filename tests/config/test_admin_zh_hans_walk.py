"""Every admin page in zh-hans, as a superuser on the demo world: the index, each registered model's list,
add form and change form of one object, and the custom pages (the customer 360, the segment builder, the
dashboards, a backtest, the imports, the bulk adjustment upload). Each answers 200 and shows none of our
messages in English; and no message of ours lacks its Chinese translation."""

from __future__ import annotations

import json
import re
from datetime import date
from html.parser import HTMLParser
from io import StringIO

import pytest
from django.contrib import admin
from django.core.management import call_command
from django.urls import NoReverseMatch, reverse

from tests.config.catalogue import (
    catalogue_entries,
    missing_translations,
    needs_words,
    our_messages,
    package_messages,
)

LANGUAGE = "zh-hans"


def test_every_message_of_ours_has_a_zh_hans_translation():
    missing = missing_translations(LANGUAGE)
    assert not missing, "No zh-hans translation for:\n" + "\n".join(
        f"  {m.msgid!r}" + (f" (context {m.context!r})" if m.context else "") + f"  [{m.where}]"
        for m in missing
    )


def test_django_axes_login_records_are_in_chinese():
    """django-axes ships no zh-hans catalogue; its messages are translated in ours."""
    messages = package_messages("axes")
    assert len(messages) > 20
    untranslated = [m.msgid for m in messages if m.translated(LANGUAGE) == m.msgid]
    assert not untranslated


def test_the_message_reader_finds_messages_and_sees_a_missing_one():
    """The reader itself: it finds messages in Python and in templates, and a made-up message without
    a translation counts as missing."""
    from tests.config.catalogue import Message

    ids = {m.msgid for m in our_messages()}
    assert "Points and tier" in ids  # loyalty/admin_customer_360.py
    assert any(m.where.endswith(".html (template)") for m in our_messages())
    assert (
        Message(msgid="A sentence nobody translated").translated(LANGUAGE) == "A sentence nobody translated"
    )
    assert Message(msgid="Points and tier").translated(LANGUAGE) != "Points and tier"


# --- What a page shows ----------------------------------------------------------------------------------


class _Texts(HTMLParser):
    """The text a person reads on a page: text nodes outside <style> and code, the labels in title,
    placeholder and aria-label attributes and on buttons, and the strings of JSON islands (json_script
    labels that the charts draw). Left out: icon ligatures ("key", "rule" are glyph names, not words),
    and the language menu, which names each language in itself ("English" in the Chinese page)."""

    ATTRIBUTES = {"title", "placeholder", "aria-label", "alt"}
    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.texts: list[str] = []
        self._skipping: list = []  # [tag, depth] of the element being skipped
        self._json = False

    def _skips(self, tag, attrs) -> bool:
        if tag in {"style", "pre", "code", "textarea", "script"}:
            return True
        if "material-symbols" in (attrs.get("class") or "") or "material-icons" in (attrs.get("class") or ""):
            return True
        return tag == "form" and "/i18n/setlang" in (attrs.get("action") or "")

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag in self.VOID:
            if not self._skipping:
                self._attributes(tag, attrs)
            return
        if self._skipping:
            if tag == self._skipping[0]:
                self._skipping[1] += 1
            return
        if self._skips(tag, attrs):
            self._skipping = [tag, 1]
            self._json = tag == "script" and attrs.get("type") == "application/json"
            return
        self._attributes(tag, attrs)

    def _attributes(self, tag, attrs):
        for name in self.ATTRIBUTES & attrs.keys():
            self.texts.append(attrs[name] or "")
        if tag == "input" and attrs.get("type") in {"submit", "button"}:
            self.texts.append(attrs.get("value") or "")

    def handle_endtag(self, tag):
        if self._skipping and tag == self._skipping[0]:
            self._skipping[1] -= 1
            if not self._skipping[1]:
                self._skipping = []
                self._json = False

    def handle_data(self, data):
        if self._skipping:
            if self._json:
                try:
                    self.texts.extend(_json_strings(json.loads(data)))
                except ValueError:
                    pass
        else:
            self.texts.append(data)


def _json_strings(value):
    """The strings of a JSON island that are words, not codes ("phone", "metrics.purchase_cycle_days")."""
    if isinstance(value, str):
        if not re.fullmatch(r"[a-z][a-z0-9_.]*", value):
            yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _json_strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _json_strings(v)


def _shown_texts(html: str) -> list[str]:
    parser = _Texts()
    parser.feed(html)
    return [t for t in (re.sub(r"\s+", " ", t).strip() for t in parser.texts) if t]


def _english_patterns():
    """(pattern, msgid) for each message of ours, and of the catalogues (django-axes' messages live
    there), that has a Chinese translation: a shown text matching the pattern is that message left in
    English. Placeholders match anything."""
    messages = {(m.context, m.msgid): m for m in our_messages()}
    messages.update({(m.context, m.msgid): m for m, _msgstr in catalogue_entries()})
    patterns = []
    for message in messages.values():
        if not needs_words(message.msgid) or message.translated(LANGUAGE) == message.msgid:
            continue
        for english in filter(None, (message.msgid, message.plural)):
            parts = re.split(
                r"%\(\w+\)(?:\.\d+)?[sdif]|%[sdif]|\{\w*\}", re.sub(r"\s+", " ", english).strip()
            )
            # A placeholder stands for one value (a number, a code, a name), never for Chinese words.
            regex = r"[^\s\u3000-\u9fff\uff00-\uffef]+?".join(re.escape(p) for p in parts)
            patterns.append((re.compile(rf"^{regex}[.:…]?$"), english))
    return patterns


def _untranslated(html: str, patterns, as_typed: frozenset = frozenset()) -> set[str]:
    found = set()
    for text in _shown_texts(html):
        if not re.search(r"[A-Za-z]", text) or text in as_typed:
            continue
        if re.fullmatch(r"[A-Za-z0-9_-]{32,}", text):
            continue  # a token in a JSON island (the CSRF token), never words: "v%(number)s" matched one

        found.update(f"{english!r} (shown as {text[:80]!r})" for rx, english in patterns if rx.match(text))
    return found


# --- The demo world and the walk -------------------------------------------------------------------------


@pytest.fixture
def chief(db):
    """A superuser whose name is no English word of ours (pytest-django's is "admin", a role's name)."""
    from django.contrib.auth import get_user_model

    return get_user_model().objects.create_superuser("wangmin", "wangmin@example.cn", "pw-walk-2026")


@pytest.fixture
def demo_world(chief):
    """The demo `make run` seeds, at a small scale, with its metrics and dashboards; plus one row in each
    table the seeds leave empty, so that every change form has an object to show."""
    out = StringIO()
    call_command("seed_demo", customers=40, events_per_customer=5, seed=11, stdout=out)
    call_command("loyalty_seed_demo", stdout=out)
    call_command("bootstrap_analytics", history_months=2, stdout=out)
    _fill_the_empty_tables(chief)


def _fill_the_empty_tables(admin_user):
    from axes.models import AccessAttempt, AccessFailureLog, AccessLog
    from django.utils import timezone
    from django_celery_beat.models import ClockedSchedule, SolarSchedule

    from crm.models import AcquisitionCost, ApiKey, Customer, Segment, StaticList
    from crm.segments.services import segment_snapshot_create

    now = timezone.now()
    if not ApiKey.objects.exists():
        ApiKey.objects.create(name="Tmall sync", key_hash="0" * 64, prefix="walk", scopes=["orders:write"])
    if not AcquisitionCost.objects.exists():
        AcquisitionCost.objects.create(channel="wechat", month=date(2026, 1, 1), cac="35.00", currency="CNY")
    segment = Segment.objects.first() or Segment.objects.create(
        name="上海客户",
        rule={"op": "and", "conditions": [{"field": "profile.city", "operator": "eq", "value": "上海"}]},
    )
    segment_snapshot_create(segment=segment, created_by=admin_user)
    if not StaticList.objects.exists():
        static_list = StaticList.objects.create(name="门店活动名单", created_by=admin_user)
        static_list.members.create(customer=Customer.objects.first())
    _campaign_started(admin_user, segment, now)
    ClockedSchedule.objects.get_or_create(clocked_time=now)
    SolarSchedule.objects.get_or_create(event="sunrise", latitude="31.23", longitude="121.47")
    AccessAttempt.objects.create(
        username="intruder", ip_address="203.0.113.9", user_agent="curl", failures_since_start=3
    )
    AccessLog.objects.create(username=admin_user.username, ip_address="127.0.0.1", user_agent="Firefox")
    AccessFailureLog.objects.create(username="intruder", ip_address="203.0.113.9", user_agent="curl")


def _campaign_started(admin_user, segment, now):
    """A campaign with two variants and a holdout, started, one message failed: the campaign page shows its
    buttons, progress and reasons; the list its figures."""
    from campaigns.models import Campaign, CampaignRun, CampaignVariant, Message, MessageTemplate
    from campaigns.services.campaigns import campaign_run_start

    campaign = Campaign.objects.create(
        name="双11预热", channel="sms", segment=segment, holdout_percent=10, status="scheduled"
    )
    template = MessageTemplate.objects.filter(channel="sms").first() or MessageTemplate.objects.create(
        code="walk-sms", name="短信", channel="sms"
    )
    for key in ("A", "B"):
        CampaignVariant.objects.create(campaign=campaign, key=key, template=template, weight=50)
    run = CampaignRun.objects.create(campaign=campaign, occurrence="once", due_at=now)
    campaign_run_start(run=run, now=now)
    first = Message.objects.filter(occurrence=str(run.pk)).order_by("id").values_list("id", flat=True)[:1]
    Message.objects.filter(id__in=list(first)).update(
        status="suppressed", reason="no_consent", reason_params={"channel": "sms"}
    )


def _identifiers_shown_as_typed() -> frozenset:
    """Codes that pages show as they are stored, since they are names code looks rows up by: the role
    groups ("administrator", capitalised in the breadcrumb; their labels are translated in the list) and
    the tier codes ("member")."""
    from django.contrib.auth.models import Group

    from loyalty.models import Tier

    codes = set(Group.objects.values_list("name", flat=True)) | set(
        Tier.objects.values_list("code", flat=True)
    )
    return frozenset(codes | {c[:1].upper() + c[1:] for c in codes})


def _admin_pages():
    """(name, url) of every admin page: the index, then per model its list, add form (when the model
    may be added) and the change form of its first object."""
    pages = [("index", reverse("admin:index"))]
    for model in admin.site._registry:
        info = (model._meta.app_label, model._meta.model_name)
        label = "{}.{}".format(*info)
        pages.append((f"{label} list", reverse("admin:{}_{}_changelist".format(*info))))
        pages.append((f"{label} add", reverse("admin:{}_{}_add".format(*info))))
        obj = model._default_manager.order_by("pk").first()
        if obj is not None:
            pages.append((f"{label} change", reverse("admin:{}_{}_change".format(*info), args=[obj.pk])))
    for name in ("crm_segment_add", "loyalty_bulkadjustmentbatch_upload"):
        try:
            pages.append((name, reverse(f"admin:{name}")))
        except NoReverseMatch:
            pass
    return pages


def _form_data(response) -> dict:
    """What the browser would send back from a change form as it stands (its inlines included)."""
    forms = [response.context["adminform"].form]
    for inline in response.context.get("inline_admin_formsets", []):
        forms.append(inline.formset.management_form)
        forms.extend(inline.formset.forms)
    data = {}
    for form in forms:
        for name, field in form.fields.items():
            value = form[name].value()
            if value is None or field.disabled:
                continue
            data[form.add_prefix(name)] = (
                [str(v) for v in value] if isinstance(value, list | tuple) else value
            )
    return data


def test_every_admin_page_answers_in_chinese(client, chief, demo_world):
    client.force_login(chief)
    client.cookies["django_language"] = LANGUAGE
    patterns = _english_patterns()
    as_typed = _identifiers_shown_as_typed()
    failures, untranslated = [], {}
    pages = _admin_pages()
    customer_360 = [url for name, url in pages if name == "crm.customer change"]
    assert customer_360, "the demo world has a customer to open"
    for name, url in pages:
        response = client.get(url, follow=True)
        if response.status_code == 403 and name.endswith(" add"):
            continue  # append-only and computed tables refuse the add form on purpose
        if response.status_code != 200:
            failures.append(f"{name} {url}: {response.status_code}")
            continue
        html = response.content.decode()
        assert f'lang="{LANGUAGE}"' in html, f"{name} is not in zh-hans"
        found = _untranslated(html, patterns, as_typed)
        if found:
            untranslated[f"{name} {url}"] = sorted(found)

    # A backtest: the tier form as it stands, tested before saving.
    from loyalty.models import Tier

    tier = Tier.objects.order_by("-rank").first()
    url = reverse("admin:loyalty_tier_change", args=[tier.pk])
    data = {**_form_data(client.get(url)), "_backtest": "1"}
    response = client.post(url, data)
    shown = [t.name for t in response.templates]
    if response.status_code != 200 or "admin/loyalty/backtest_result.html" not in shown:
        failures.append(f"tier backtest {url}: {response.status_code}")
    else:
        found = _untranslated(response.content.decode(), patterns, as_typed)
        if found:
            untranslated[f"tier backtest {url}"] = sorted(found)

    assert not failures, "Pages that did not answer 200:\n  " + "\n  ".join(failures)
    assert not untranslated, "Our messages shown in English in zh-hans:\n" + "\n".join(
        f"  {page}:\n    " + "\n    ".join(texts) for page, texts in untranslated.items()
    )


def test_the_walk_sees_an_english_message():
    """The check itself: a page that shows one of our messages in English is caught."""
    html = '<html lang="zh-hans"><body><h2>Points and tier</h2><p>积分与等级</p></body></html>'
    assert _untranslated(html, _english_patterns()) == {"'Points and tier' (shown as 'Points and tier')"}


def test_both_catalogues_are_found_and_neither_shadows_the_other():
    """loyalty's strings live partly in loyalty/locale (found as the app's catalogue) and partly in
    locale/ (LOCALE_PATHS, which wins on a clash): every entry of each must be what gettext answers, so
    that no string is lost and no translation is hidden by the same msgid translated otherwise."""
    wrong = []
    for message, msgstr in catalogue_entries():
        if msgstr and message.translated(LANGUAGE) != msgstr:
            wrong.append(f"{message.msgid!r}: catalogue {msgstr!r}, shown {message.translated(LANGUAGE)!r}")
    assert not wrong, "\n".join(wrong)
