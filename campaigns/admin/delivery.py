"""The delivery overview (queue depth, send rate, failures, with a chart) and the dead letters (messages
that failed for good, with their error, and a retry for staff allowed to). Thin: the figures come from
campaigns.selectors, the retry from campaigns.services.dead_letters."""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _

from campaigns.admin.messages import CustomerSearchMixin, MessageColumnsMixin
from campaigns.models import DeadLetter, DeliveryOverview, MessageStatus
from campaigns.selectors import FAILURE_LABELS, delivery_overview
from campaigns.services.dead_letters import dead_letters_retry, retried_as
from crm.admin.base import CustomerColumnsMixin, LargeTableAdmin, ReadOnlyAdmin


def _chart_data(overview) -> dict:
    tz = timezone.get_default_timezone()
    return {
        "minutes": [r["minute"].astimezone(tz).strftime("%H:%M") for r in overview.rate],
        "channels": [
            {"code": code, "label": label, "counts": [r["by_channel"].get(code, 0) for r in overview.rate]}
            for code, label in overview.channels
        ],
        "labels": {"perMinute": gettext("messages a minute")},
    }


@admin.register(DeliveryOverview)
class DeliveryOverviewAdmin(ReadOnlyAdmin):
    """The delivery overview page. Its admin entry opens the figures, not a list of messages."""

    def changelist_view(self, request, extra_context=None):
        if not self.has_view_permission(request):
            raise PermissionDenied
        now = timezone.now()
        overview = delivery_overview(now=now)
        statuses = [
            (s.value, s.label) for s in (MessageStatus.QUEUED, MessageStatus.DEFERRED, MessageStatus.SENDING)
        ]
        channels = [
            {
                "code": code,
                "label": label,
                "cells": [(s, overview.queue_by_channel.get(code, {}).get(s, 0)) for s, _label in statuses],
                "total": sum(overview.queue_by_channel.get(code, {}).values()),
            }
            for code, label in overview.channels
        ]
        messages_url = reverse("admin:campaigns_message_changelist")
        context = {
            **self.admin_site.each_context(request),
            "title": gettext("Delivery overview"),
            "opts": self.model._meta,
            "overview": overview,
            "queue_channels": channels,
            "queue_statuses": statuses,
            "chart": _chart_data(overview),
            "messages_url": messages_url if request.user.has_perm("campaigns.view_message") else None,
            "dead_letters_url": (
                reverse("admin:campaigns_deadletter_changelist")
                if request.user.has_perm("campaigns.view_deadletter")
                else None
            ),
        }
        return TemplateResponse(request, "admin/campaigns/delivery_overview.html", context)


class ReasonFilter(admin.SimpleListFilter):
    """The failure reasons the pipeline writes (campaigns/reasons.py): a fixed list, no query."""

    title = _("reason")
    parameter_name = "reason"

    def lookups(self, request, model_admin):
        return list(FAILURE_LABELS.items())

    def queryset(self, request, queryset):
        return queryset.filter(reason=self.value()) if self.value() else queryset


@admin.register(DeadLetter)
class DeadLetterAdmin(
    CustomerSearchMixin, MessageColumnsMixin, CustomerColumnsMixin, ReadOnlyAdmin, LargeTableAdmin
):
    empty_results_text = _(
        "No message has failed for good. A message the provider refuses for good (an invalid address, a "
        "refused template) or that fails every retry is listed here with its error, to retry it or leave it."
    )
    list_display = (
        "id",
        "finished_at",
        "customer_display",
        "channel",
        "source_display",
        "error_display",
        "why_display",
        "retried_display",
    )
    list_filter = ("channel", ReasonFilter, "source_kind", "purpose")
    list_filter_submit = True
    sortable_by = ()
    ordering = ("-finished_at", "-id")
    actions = ("retry",)
    fields = (
        "customer_detail",
        "channel",
        "purpose",
        "source_kind",
        "source_label",
        "status",
        "why_display",
        "error_code",
        "error_detail",
        "address",
        "provider",
        "attempts",
        "created_at",
        "handed_at",
        "finished_at",
        "retried_display",
        "history_display",
    )
    readonly_fields = fields

    def get_queryset(self, request):
        return super().get_queryset(request).filter(status=MessageStatus.FAILED).defer("data", "links")

    @admin.display(description=_("error"))
    def error_display(self, obj):
        detail = obj.error_detail if len(obj.error_detail) <= 160 else obj.error_detail[:160] + "…"
        return " · ".join(filter(None, [obj.error_code, detail])) or "—"

    @admin.display(description=_("retried as"))
    def retried_display(self, obj):
        retry = retried_as(obj)
        if retry is None:
            return "—"
        from django.utils.html import format_html

        return format_html(
            '<a href="{}">#{}</a>', reverse("admin:campaigns_message_change", args=[retry]), retry
        )

    def has_retry_permission(self, request):
        return request.user.has_perm("campaigns.retry_deadletter")

    @admin.action(description=_("Retry: queue a new attempt"), permissions=["retry"])
    def retry(self, request, queryset):
        # Admin actions skip permission checks on a crafted POST only if the action is not listed; checked
        # here again since the action changes what is sent.
        if not self.has_retry_permission(request):
            raise PermissionDenied
        ids = list(queryset.values_list("pk", flat=True)[:1000])
        result = dead_letters_retry(message_ids=ids, user=request.user, now=timezone.now())
        if result.queued:
            self.message_user(
                request,
                ngettext(
                    "%(n)d message queued again as a new attempt.",
                    "%(n)d messages queued again as new attempts.",
                    len(result.queued),
                )
                % {"n": len(result.queued)},
                messages.SUCCESS,
            )
        if result.already:
            self.message_user(
                request,
                ngettext(
                    "%(n)d message was retried before: not queued again.",
                    "%(n)d messages were retried before: not queued again.",
                    len(result.already),
                )
                % {"n": len(result.already)},
                messages.WARNING,
            )
