"""The frequency caps a fresh install starts with (campaigns/migrations/0006_default_frequency_caps.py)."""

import pytest

pytestmark = pytest.mark.django_db


def test_a_fresh_install_caps_marketing_at_2_a_day_and_5_a_week_across_channels():
    from importlib import import_module

    from django.apps import apps

    from campaigns.models import FrequencyCap

    seed = import_module("campaigns.migrations.0006_default_frequency_caps")
    FrequencyCap.objects.all().delete()  # whatever earlier tests left: seed afresh
    seed.add_defaults(apps, None)
    seed.add_defaults(apps, None)  # re-running adds nothing
    assert sorted(FrequencyCap.objects.values_list("channel", "period", "limit", "active")) == [
        ("", "day", 2, True),
        ("", "week", 5, True),
    ]
