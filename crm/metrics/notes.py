"""What a metrics run has to say (a fit that did not converge, too few buyers to predict, ...), stored on
the run as codes with parameters (JSON in MetricsRun.message) and put into words in the reader's language
when shown (`run_message_text`). Messages stored as English sentences before the codes are rewritten to
codes by migration crm/0015."""

from __future__ import annotations

import json

from django.utils.translation import gettext_lazy as _

NOTES = {
    "baseline": _("First computation: a baseline, no stage-change events emitted."),
    "fallback_cycle": _("Purchase cycle assumed for one-time buyers: %(days)s days."),
    "bgnbd_not_converged": _("The BG/NBD fit did not report convergence."),
    "gg_not_converged": _("The Gamma-Gamma fit did not report convergence."),
    "gg_unbounded": _("Gamma-Gamma q = %(q)s ≤ 1: mean spend is unbounded, no value predicted."),
    "too_few": _(
        "Too few customers to fit (%(buyers)s buyers, %(repeat)s repeat; %(min_buyers)s and "
        "%(min_repeat)s needed): no predictions."
    ),
    "failed": _("The computation failed: %(error)s"),
}


def note(code: str, **params) -> dict:
    if code not in NOTES:
        raise ValueError(f"unknown metrics note {code!r}")
    return {"code": code, **params}


def notes_store(notes: list[dict]) -> str:
    return json.dumps(notes, ensure_ascii=False)


def run_message_text(message: str, *, separator: str = " ") -> str:
    """The stored message in the active language; text that is not a list of codes is shown as it is."""
    if not message:
        return ""
    try:
        notes = json.loads(message)
    except ValueError:
        return message
    if not isinstance(notes, list):
        return message
    parts = []
    for item in notes:
        template = NOTES.get(item.get("code")) if isinstance(item, dict) else None
        if template is None:
            parts.append(str(item))
            continue
        params = {k: v for k, v in item.items() if k != "code"}
        parts.append(str(template) % params if params else str(template))
    return separator.join(parts)
