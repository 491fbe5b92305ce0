"""Why an enrollment ended or failed: the engine stores a code with parameters (Enrollment.reason,
reason_params) and the reader sees it in their language (`reason_text`), never an English sentence
frozen into a row."""

from __future__ import annotations

from django.utils.translation import gettext_lazy as _

REASONS = {
    "holdout": _("In the holdout: recorded for the comparison, sent nothing"),
    "goal": _("Reached the journey's goal"),
    "archived": _("The journey was archived"),
    "version_node_unmapped": _(
        "Version %(version)s replaced this journey and has no place for node %(node)s: staff chose to end it"
    ),
    "journey_ended": _("The journey's end date passed"),
    "node_missing": _("The node %(node)s is not in this version"),
    "node_type_unknown": _("Unknown node type %(type)s"),
    "template_missing": _("No message template has the code %(template)s"),
    "no_template_for_channel": _("Template %(template)s has no %(channel)s version"),
    "programme_missing": _("The coupon programme %(programme)s is missing or inactive"),
    "tag_missing": _("No tag is named %(tag)s"),
    "attribute_refused": _("A journey may not change the attribute %(attribute)s"),
    "webhook_failed": _("The webhook failed after %(attempts)s attempts (%(error)s)"),
}


class _Params(dict):
    def __missing__(self, key):
        return "?"


def reason_text(code: str, params: dict | None = None) -> str:
    template = REASONS.get(code)
    if template is None:
        return code
    return str(template) % _Params(params or {})
