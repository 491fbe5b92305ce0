"""provider_for(channel) builds the configured provider; a wrong MESSAGING_PROVIDERS is reported by name
(by provider_for and by `manage.py check`); the console and file providers show what would go out."""

import json
import logging
import threading
from datetime import UTC, datetime

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from campaigns.providers.base import Outcome, OutgoingMessage
from campaigns.providers.console import ConsoleProvider
from campaigns.providers.email import DjangoMailProvider
from campaigns.providers.file import FileProvider
from campaigns.providers.registry import provider_for, providers_problems

NOW = datetime(2026, 12, 7, 2, 0, tzinfo=UTC)
CONSOLE = "campaigns.providers.console.ConsoleProvider"


def msg(n: int = 1) -> OutgoingMessage:
    return OutgoingMessage(
        message_id=n,
        idempotency_key=f"msg-{n}",
        channel="sms",
        address="+8613800000001",
        content={"text": "【品牌】您的积分已到账，回T退订", "data": {"thing1": "积分"}},
        language="zh-hans",
    )


def test_the_default_setting_is_valid_and_gives_each_channel_its_provider():
    assert providers_problems() == []
    # Outside production with no mail server named, email goes to the console like the rest (make run).
    assert isinstance(provider_for("email"), DjangoMailProvider | ConsoleProvider)
    sms = provider_for("sms")
    assert isinstance(sms, ConsoleProvider) and (sms.code, sms.channel) == ("sms", "sms")
    assert provider_for("sms") is sms  # kept for this thread


def test_each_thread_gets_its_own_instance():
    mine = provider_for("sms")
    other = []
    t = threading.Thread(target=lambda: other.append(provider_for("sms")))
    t.start()
    t.join()
    assert other[0] is not mine


def test_a_changed_setting_is_picked_up(settings, tmp_path):
    before = provider_for("sms")
    settings.MESSAGING_PROVIDERS = {
        **settings.MESSAGING_PROVIDERS,
        "sms": {
            "BACKEND": "campaigns.providers.file.FileProvider",
            "OPTIONS": {"PATH": str(tmp_path / "m.jsonl")},
            "RATE": 5,
            "CODE": "sms-file",
        },
    }
    after = provider_for("sms")
    assert after is not before and isinstance(after, FileProvider) and after.code == "sms-file"


@pytest.mark.parametrize(
    ("setting", "needle"),
    [
        ({"fax": {"BACKEND": CONSOLE}}, "['fax']: unknown channel"),
        ({"sms": "console"}, "must be a dict"),
        ({"sms": {"BACKEND": "campaigns.providers.nope.Nope"}}, "cannot be imported"),
        ({"sms": {"BACKEND": "campaigns.models.Message"}}, "is not a Provider subclass"),
        ({"sms": {"BACKEND": CONSOLE, "RATE": -1}}, "['RATE'] must be a number ≥ 0"),
        ({"sms": {"BACKEND": CONSOLE, "RATE": "fast"}}, "['RATE'] must be a number"),
        ({"sms": {"BACKEND": CONSOLE, "OPTION": {}}}, "unknown keys ['OPTION']"),
        ({"sms": {"BACKEND": CONSOLE, "OPTIONS": {"STREAM": "tty"}}}, "STREAM must be"),
        (
            {"wechat": {"BACKEND": "campaigns.providers.wechat.WeChatProvider", "OPTIONS": {}}},
            "APPID is required",
        ),
        (
            {"sms": {"BACKEND": "campaigns.providers.http.HttpProvider", "OPTIONS": {"URL": "x"}}},
            "URL must be",
        ),
        (
            {"sms": {"BACKEND": CONSOLE, "CODE": "p"}, "push": {"BACKEND": CONSOLE, "CODE": "p"}},
            "already the code of",
        ),
    ],
)
def test_a_wrong_setting_is_named(settings, setting, needle):
    settings.MESSAGING_PROVIDERS = setting
    problems = " | ".join(providers_problems())
    assert needle in problems and "MESSAGING_PROVIDERS[" in problems
    with pytest.raises(SystemCheckError, match="campaigns.E001"):
        call_command("check")


def test_provider_for_an_unconfigured_or_broken_channel_says_which(settings):
    settings.MESSAGING_PROVIDERS = {"sms": {"BACKEND": CONSOLE, "RATE": -1}}
    with pytest.raises(ImproperlyConfigured, match=r"No provider for channel 'push'.*configured: sms"):
        provider_for("push")
    with pytest.raises(ImproperlyConfigured, match=r"MESSAGING_PROVIDERS\['sms'\]\['RATE'\]"):
        provider_for("sms")


def test_a_bad_rate_limit_url_fails_the_check(settings):
    settings.MESSAGING_RATE_LIMIT_URL = "memcached://x"
    with pytest.raises(SystemCheckError, match="campaigns.E002"):
        call_command("check")


def test_the_console_provider_logs_chinese_readably(caplog, capsys):
    with caplog.at_level(logging.INFO, logger="campaigns.providers.console"):
        results = ConsoleProvider(code="sms", channel="sms", options={"STREAM": "stdout"}).send_batch(
            [msg()], now=NOW
        )
    assert results[0].outcome == Outcome.SENT
    assert "【品牌】您的积分已到账，回T退订" in caplog.text and "+8613800000001" in caplog.text
    assert '"thing1": "积分"' in caplog.text and "\\u" not in caplog.text
    assert "回T退订" in capsys.readouterr().out


def test_the_file_provider_appends_one_json_line_per_message(tmp_path):
    path = tmp_path / "out" / "messages.jsonl"
    p = FileProvider(code="sms", channel="sms", options={"PATH": str(path)})
    p.send_batch([msg(1), msg(2)], now=NOW)
    p.send_batch([msg(3)], now=NOW)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["message_id"] for line in lines] == [1, 2, 3]
    assert "回T退订" in lines[0]
    assert json.loads(lines[2])["idempotency_key"] == "msg-3"


def test_the_file_provider_retries_when_it_cannot_write(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    [result] = FileProvider(code="sms", channel="sms", options={"PATH": str(blocker / "x.jsonl")}).send_batch(
        [msg()], now=NOW
    )
    assert (result.outcome, result.error_code) == (Outcome.RETRY, "file_error")
