"""Metrics runs stored their notes as English sentences joined by "; "; they are now codes with
parameters (crm.metrics.notes), put into words when shown. This rewrites the old messages into codes so
they are shown in the reader's language too; a sentence it does not recognise is kept as it was."""

import json
import re

from django.db import migrations

_PATTERNS = [
    (re.compile(r"^first computation: baseline, no stage-change events$"), "baseline"),
    (re.compile(r"^cycle of one-time buyers: (?P<days>[\d.]+) days$"), "fallback_cycle"),
    (re.compile(r"^BG/NBD fit did not report convergence$"), "bgnbd_not_converged"),
    (re.compile(r"^Gamma-Gamma fit did not report convergence$"), "gg_not_converged"),
    (
        re.compile(r"^Gamma-Gamma q = (?P<q>[-\d.]+) ≤ 1: mean spend is unbounded, no value predicted$"),
        "gg_unbounded",
    ),
    (
        re.compile(
            r"^too few customers to fit \((?P<buyers>\d+) buyers, (?P<repeat>\d+) repeat; need "
            r"(?P<min_buyers>\d+) and (?P<min_repeat>\d+)\): no predictions$"
        ),
        "too_few",
    ),
]


def _codes(message: str):
    notes = []
    for sentence in message.split("; "):
        for pattern, code in _PATTERNS:
            match = pattern.match(sentence)
            if match:
                notes.append({"code": code, **match.groupdict()})
                break
        else:
            return None  # not (only) the computation's own notes: a failure's error text, kept as is
    return notes


def forwards(apps, schema_editor):
    MetricsRun = apps.get_model("crm", "MetricsRun")
    for run in MetricsRun.objects.exclude(message="").exclude(message__startswith="[").only("id", "message"):
        notes = _codes(run.message)
        if notes is None and run.status == "failed":
            notes = [{"code": "failed", "error": run.message}]
        if notes is not None:
            MetricsRun.objects.filter(pk=run.pk).update(message=json.dumps(notes, ensure_ascii=False))


class Migration(migrations.Migration):
    dependencies = [("crm", "0016_importjob_outcome")]

    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
