"""Why a message was deferred, suppressed, failed or cancelled: stored on the message as a code with
parameters (Message.reason, Message.reason_params) and put into words in the reader's language when shown,
so a Chinese marketer and an English one read the same row each in their own language."""

from django.utils.translation import gettext, gettext_noop, pgettext

from campaigns.models import Channel, SuppressionReason

REASONS: dict[str, str] = {
    # Suppressed before sending: the rules said no.
    "no_consent": gettext_noop("no %(channel)s consent"),
    "no_address": gettext_noop("no %(channel)s address"),
    "invalid_address": gettext_noop("invalid %(channel)s address: %(address)s"),
    "suppressed_address": gettext_noop("address on the suppression list (%(why)s)"),
    "capped": gettext_noop("capped: %(limit)s marketing %(channel)s %(period)s"),
    "capped_all": gettext_noop("capped: %(limit)s marketing messages %(period)s"),
    "lower_priority": gettext_noop("lower priority than %(than)s"),
    "expired": gettext_noop("not sent before it expired"),
    "customer_erased": gettext_noop("customer erased"),
    "render_failed": gettext_noop("template could not be rendered: %(error)s"),
    "screen_failed": gettext_noop(
        "gave up after %(attempts)s attempts: the checks before sending failed: %(error)s"
    ),
    # Deferred: it will go later.
    "quiet_hours": gettext_noop("quiet hours, deferred to %(until)s"),
    "capped_deferred": gettext_noop(
        "capped: %(limit)s marketing %(channel)s %(period)s, deferred to %(until)s"
    ),
    "capped_all_deferred": gettext_noop(
        "capped: %(limit)s marketing messages %(period)s, deferred to %(until)s"
    ),
    "provider_retry": gettext_noop("provider unavailable (%(error)s), retry at %(until)s"),
    "rate_limited": gettext_noop("provider send rate reached, retry at %(until)s"),
    "screen_error": gettext_noop("the checks before sending failed (%(error)s), retry at %(until)s"),
    "render_error": gettext_noop("rendering failed (%(error)s), retry at %(until)s"),
    # The reaper took the message back from a worker that stopped (campaigns/services/outbox.py).
    "claim_lapsed": gettext_noop("its worker stopped before sending it: queued again"),
    "claim_lapsed_handed": gettext_noop(
        "its worker stopped after handing it to a provider that ignores repeats: queued again"
    ),
    "claim_lapsed_maybe_sent": gettext_noop(
        "its worker stopped, perhaps after sending it to a provider that ignores repeats: queued again"
    ),
    "campaign_paused": gettext_noop("held: the campaign is paused"),
    # Failed, cancelled or unknown.
    "provider_rejected": gettext_noop("provider refused it: %(error)s"),
    "retries_exhausted": gettext_noop("gave up after %(attempts)s attempts: %(error)s"),
    "bounced": gettext_noop("bounced: %(detail)s"),
    "complained": gettext_noop("marked as spam"),
    "unsubscribed": gettext_noop("customer unsubscribed from %(channel)s"),
    "source_cancelled": gettext_noop("%(source)s was cancelled"),
    "no_answer": gettext_noop("handed to the provider, no answer: to reconcile"),
    # Staff retried a dead letter (campaigns/services/dead_letters.py): on the new message, and in the
    # dead letter's history.
    "retry_of": gettext_noop("retry of message #%(message)s"),
    "retried": gettext_noop("retried by %(by)s as message #%(as)s"),
}

_PERIODS = {
    "day": gettext_noop("today"),
    "week": gettext_noop("this week"),
    "month": gettext_noop("this month"),
}


def reason_text(code: str, params: dict | None = None) -> str:
    """The reason in the active language; an unknown code (a newer version wrote it) is shown as itself."""
    if not code:
        return ""
    msgid = REASONS.get(code)
    if msgid is None:
        return code
    values = dict(params or {})
    if "channel" in values:
        try:
            values["channel"] = Channel(values["channel"]).label
        except ValueError:
            pass
    if "why" in values:  # suppressed_address: the suppression list's reason code
        try:
            values["why"] = SuppressionReason(values["why"]).label
        except ValueError:
            pass
    if "period" in values and values["period"] in _PERIODS:
        values["period"] = pgettext("frequency cap period", _PERIODS[values["period"]])
    try:
        return gettext(msgid) % values
    except (KeyError, TypeError, ValueError):
        return gettext(msgid)
