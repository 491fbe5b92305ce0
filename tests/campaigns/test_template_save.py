"""Saving templates: every content change is a new version, problems are named by field and line, and
a message keeps the version it was rendered from."""

import pytest
from django.utils import timezone

from campaigns.models import MessageTemplate, TemplateVersion
from campaigns.rendering import render_batch
from campaigns.services.templates import TemplateInvalid, template_save
from tests.campaigns.helpers import EMAIL_CONTENT, message_make, template_make
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db


def problems_of(channel, content, **kw):
    template = MessageTemplate(code="t", name="t", channel=channel, **kw)
    with pytest.raises(TemplateInvalid) as caught:
        template_save(template=template, content=content)
    assert not MessageTemplate.objects.filter(code="t").exists()  # nothing half-saved
    found = {}
    for p in caught.value.problems:
        found.setdefault((p.language, p.field_name), p.problem)  # the first problem of each field
    return found


def test_a_change_makes_a_new_version_and_the_same_content_does_not():
    template = template_make()
    first = template.current_version
    assert first.number == 1
    again = template_save(template=template, content=EMAIL_CONTENT)
    assert not again.created_version and again.version == first
    changed = {**EMAIL_CONTENT, "en": {**EMAIL_CONTENT["en"], "subject": "Shipped: {{ data.order_id }}"}}
    saved = template_save(template=template, content=changed)
    assert saved.created_version and saved.version.number == 2
    template.refresh_from_db()
    assert template.current_version == saved.version
    assert TemplateVersion.objects.filter(template=template).count() == 2
    # CRLF from a browser textarea is the same content.
    crlf = {**changed, "en": {**changed["en"], "text": changed["en"]["text"].replace("\n", "\r\n")}}
    assert not template_save(template=template, content=crlf).created_version


def test_a_message_keeps_its_version_after_the_template_changes():
    template = template_make()
    customer = CustomerFactory(name="王芳", language="en")
    pinned = message_make(customer=customer, template=template, template_version=template.current_version)
    template_save(template=template, content={"en": {"subject": "NEW {{ customer.name }}", "text": "new"}})
    fresh = message_make(customer=customer, template=template, occurrence="2")
    old_result, new_result = render_batch(messages=[pinned, fresh], now=timezone.now())
    assert old_result.version_id == pinned.template_version_id
    assert old_result.subject == "王芳, order shipped"  # no order id in the data: empty, one line
    assert new_result.subject == "NEW 王芳"
    assert new_result.version_id != old_result.version_id


def test_syntax_error_and_unknown_variable_are_named_with_their_line():
    content = {
        "zh-hans": {
            "subject": "订单已发货",
            "html": "<p>你好</p>\n<p>{{ customer.name }}</p>\n{% if customer.city %}",
            "text": "第一行\n{{ customer.nmae }}\n{{ coupn.code }}",
        }
    }
    problems = problems_of("email", content)
    assert problems[("zh-hans", "html")].code == "syntax"
    assert problems[("zh-hans", "html")].line == 3
    text = problems[("zh-hans", "text")]
    assert text.code == "unknown_variable" and text.line == 2 and text.params["name"] == "customer.nmae"


def test_unknown_variables_guarded_by_default_or_defined_are_allowed():
    content = {
        "en": {
            "subject": "{{ customer.nickname | default('friend') }}",
            "text": "{% if promo is defined %}{{ promo }}{% endif %}{{ data.anything.at.all }}"
            "{% for p in recommendations %}{{ p.name }}{% endfor %}{% set x = 1 %}{{ x }}",
        }
    }
    template = template_save(template=MessageTemplate(code="ok", name="ok", channel="email"), content=content)
    assert template.version.number == 1


def test_required_fields_per_channel():
    assert problems_of("email", {"en": {"subject": "", "text": "hi"}})[("en", "subject")].code == "required"
    assert problems_of("email", {"en": {"subject": "s"}})[("en", "text")].code == "required"
    assert problems_of("sms", {"en": {"text": " "}})[("en", "text")].code == "required"
    assert problems_of("push", {"en": {"title": "t"}})[("en", "body")].code == "required"
    assert ("xx", "language") in problems_of("sms", {"xx": {"text": "hi"}})


def test_wechat_keys_lengths_and_kind_are_checked():
    content = {
        "zh-hans": {
            "template_id": "",
            "kind": "subscribe",
            "data": {
                "thing1": "{{ customer.name }}您好，您的积分即将过期，请尽快使用以免失效哦",
                "Bad Key": "x",
                "time2": "{{ loyalty.expiring_last_day }}",
            },
        }
    }
    problems = problems_of("wechat", content)
    assert problems[("zh-hans", "template_id")].code == "required"
    assert problems[("zh-hans", "data/thing1")].code == "wechat_length"
    assert problems[("zh-hans", "data/Bad Key")].code == "wechat_key"
    assert ("zh-hans", "data/time2") not in problems
    bad_kind = {"zh-hans": {"template_id": "T1", "kind": "nope", "data": {"first": "x"}}}
    assert problems_of("wechat", bad_kind)[("zh-hans", "kind")].code == "wechat_kind"


def test_a_coupon_needs_a_programme():
    problems = problems_of("sms", {"zh-hans": {"text": "券码 {{ coupon.code }}"}})
    assert problems[("", "coupon_programme")].code == "coupon_programme"


def test_an_exploding_template_is_refused_at_save():
    problems = problems_of("sms", {"en": {"text": "hi\n{{ 'a' * 10**7 }}"}})
    assert problems[("en", "text")].code == "value_too_big"
    assert problems[("en", "text")].line == 2
    problems = problems_of("sms", {"en": {"text": "{{ ''.__class__ }}"}})
    assert problems[("en", "text")].code == "unsafe"


def test_the_demo_templates_seed_every_channel_in_both_languages_and_render():
    from django.core.management import call_command

    from campaigns.demo_templates import DEMO

    call_command("campaigns_seed_templates")
    call_command("campaigns_seed_templates")  # idempotent: no second version
    assert MessageTemplate.objects.count() == len(DEMO) * 4
    assert all(
        t.current_version.number == 1 for t in MessageTemplate.objects.select_related("current_version")
    )
    customer = CustomerFactory(name="", language="")
    messages = [
        message_make(customer=customer, template=t, occurrence=t.code, data={"order_id": "TM1", "points": 50})
        for t in MessageTemplate.objects.all()
    ]
    results = render_batch(messages=messages, now=timezone.now())
    assert all(not hasattr(r, "code") for r in results), [r for r in results if hasattr(r, "code")]
    by_code = {m.template.code: r for m, r in zip(messages, results, strict=True)}
    assert by_code["birthday_wish.sms"].content["text"].startswith("【母婴优选】亲爱的会员，生日快乐")
    assert by_code["winback_miss_you.email"].subject.startswith("你还记得吗？亲爱的会员")
    assert len(by_code["winback_miss_you.sms"].content["text"].split("券")[1][:12]) == 12  # a real code
    assert by_code["order_shipped.wechat"].content["data"]["character_string1"] == "TM1"
