"""Every model field the admin shows has a translatable label of its own.

A field without `verbose_name` gets one made from its name ("performed by"), which no catalogue can
translate, so the zh-hans admin would show English there."""

import pytest
from django.apps import apps
from django.utils import translation

from crm.models import Order
from loyalty.models import PointLot

APPS = ["crm", "loyalty", "campaigns", "journeys"]


def fields_without_label():
    missing = []
    for app_label in APPS:
        for model in apps.get_app_config(app_label).get_models():
            if model.__name__.startswith("Historical"):
                continue  # simple_history copies the labels of the tracked model
            for field in model._meta.get_fields():
                if field.auto_created or not field.concrete:
                    continue
                if field._verbose_name is None:
                    missing.append(f"{model._meta.label}.{field.name}")
    return missing


def test_every_model_field_has_an_explicit_label():
    assert fields_without_label() == []


@pytest.mark.parametrize(
    "model, field_name, english, chinese",
    [
        (Order, "customer", "customer", "客户"),
        (PointLot, "expire_entry", "expiry entry", "积分过期流水"),
    ],
)
def test_field_labels_are_translated(model, field_name, english, chinese):
    field = model._meta.get_field(field_name)
    with translation.override("en"):
        assert str(field.verbose_name) == english
    with translation.override("zh-hans"):
        assert str(field.verbose_name) == chinese
