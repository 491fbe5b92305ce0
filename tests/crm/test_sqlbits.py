"""The SQL snippets that splice a name into the statement refuse anything but a plain identifier."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from crm.analytics.sqlbits import json_text


@pytest.mark.parametrize("key", ["utm_source", "campaign_id", "k2"])
def test_json_text_accepts_plain_keys(key):
    assert key in json_text("e.properties", key)


@pytest.mark.parametrize("key", ["", "a'b", "x') OR 1=1 --", "Utm", "é", "a b", "2x", "a-b"])
def test_json_text_refuses_a_key_that_is_not_a_plain_identifier(key):
    with pytest.raises(ValueError, match="not a plain identifier"):
        json_text("e.properties", key)


def test_json_text_refuses_a_bad_key_under_python_dash_o():
    # -O strips asserts: the guard must survive it.
    code = (
        "import django\n"
        "django.setup()\n"
        "from crm.analytics.sqlbits import json_text\n"
        "try:\n"
        "    json_text('e.properties', \"x') OR 1=1 --\")\n"
        "except ValueError:\n"
        "    print('refused')\n"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings"}
    out = subprocess.run(
        [sys.executable, "-O", "-c", code], capture_output=True, text=True, check=True, env=env
    )
    assert out.stdout.strip() == "refused"
