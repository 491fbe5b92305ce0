"""The admin's "New journey from a ready-made one" page: a card per ready-made journey (journeys/library.py)
with its name, what it does and what it starts on, each with a button that copies it into a new draft and
opens the draft in the designer. A mixin on the journey's ModelAdmin, like the designer's.

    GET  journeys/journey/library/               the cards
    POST journeys/journey/library/<code>/copy/   copy one; redirects to the new journey's designer
"""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponseNotAllowed
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from unfold.decorators import action

from journeys import designer
from journeys.library import library_journey_get, library_journeys
from journeys.nodes import GraphInvalid
from journeys.services.journeys import JourneyRefused


def _trigger_label(trigger_kind: str) -> str:
    for field in designer.trigger_kind_choices():
        if field["value"] == trigger_kind:
            return field["label"]
    return trigger_kind


class JourneyLibraryMixin:
    """Adds the ready-made journeys' page, and a button to it above the journey list."""

    actions_list = ["open_library"]

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path("library/", wrap(self.library_view), name="journeys_journey_library"),
            path(
                "library/<slug:code>/copy/",
                wrap(self.library_copy_view),
                name="journeys_journey_library_copy",
            ),
            *super().get_urls(),
        ]

    @action(
        description=gettext_lazy("New journey from a ready-made one"),
        url_path="ready-made",
        icon="library_add",
    )
    def open_library(self, request):
        return redirect("admin:journeys_journey_library")

    def library_view(self, request):
        if not self.has_view_permission(request):
            raise PermissionDenied
        cards = []
        for item in library_journeys():
            entry = item.nodes[0][2].get("trigger", {})
            cards.append(
                {
                    "code": item.code,
                    "name": str(item.name),
                    "summary": str(item.summary),
                    "kind": item.kind,
                    "kind_label": _("Time-based") if item.kind == "time" else _("Behaviour-based"),
                    "trigger": _trigger_label(entry.get("kind", "")),
                    "steps": len(item.nodes),
                    "holdout": item.settings.get("holdout_percent") or 0,
                }
            )
        context = {
            **self.admin_site.each_context(request),
            "title": _("New journey from a ready-made one"),
            "opts": self.model._meta,
            "cards": cards,
            "can_copy": self.has_add_permission(request),
        }
        return TemplateResponse(request, "admin/journeys/journey/library.html", context)

    def library_copy_view(self, request, code):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.has_add_permission(request):
            raise PermissionDenied
        item = library_journey_get(code)
        if item is None:
            raise Http404(_("There is no ready-made journey %(code)s.") % {"code": code})
        from journeys.library import library_journey_copy

        try:
            journey = library_journey_copy(code=code, created_by=request.user)
        except (JourneyRefused, GraphInvalid) as exc:
            messages.error(request, str(exc))
            return redirect("admin:journeys_journey_library")
        messages.success(
            request,
            _("“%(name)s” is a new draft: adapt it, then publish it.") % {"name": journey.name},
        )
        return redirect("admin:journeys_journey_designer", journey.pk)
