"""The journey designer's admin page and its JSON endpoints, mounted on the journey's admin (a mixin, so the
journey's ModelAdmin stays where it is and only adds `JourneyDesignerMixin` to its bases).

    GET  <journey>/designer/                         the canvas page (the draft, else the published version)
    GET  <journey>/designer/versions/<n>/graph/      graph, settings, version, per-node counts
    PUT  <journey>/designer/versions/<n>/graph/      save the draft: {"graph", "settings", "revision"}
    POST <journey>/designer/versions/<n>/publish/    publish the draft: {"revision"}
    GET  <journey>/designer/versions/<n>/counts/     per-node counts only (the canvas refreshes them)
    GET  <journey>/designer/results/                 converted, conversion and revenue against the holdout
    POST <journey>/designer/new-draft/               a new draft from the published version

Thin views: the graph is validated and stored by journeys.services.journeys, never trusted from the
browser. Every answer is JSON; bad input is a 400 with a message (and the problems by node), a refused
change a 409, a missing permission a 403, never a 500. The admin's own wrapper makes them staff-only and
CSRF-protected.
"""

from __future__ import annotations

import json

from django.contrib import admin
from django.contrib.staticfiles import finders
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import Http404, JsonResponse
from django.middleware.csrf import get_token
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.translation import get_language, gettext_lazy
from django.utils.translation import gettext as _

from journeys import designer
from journeys.analytics import journey_results_display
from journeys.models import InFlight, Journey, JourneyVersion, VersionMigration, VersionStatus
from journeys.nodes import GraphInvalid, graph_validate, settings_normalised
from journeys.selectors import journey_node_counts
from journeys.services.journeys import (
    JourneyRefused,
    journey_draft_create,
    journey_graph_save,
    journey_publish,
)
from journeys.services.versions import version_migration_run

# Batches the publish request moves itself before answering (as journeys/admin/publish.py).
PUBLISH_PAGE_BATCHES = 5

BUILD_PATH = "journeys/build/designer.js"


def _error(status: int, message: str, **extra) -> JsonResponse:
    return JsonResponse({"message": message, **extra}, status=status)


def _problems(problems) -> list[dict]:
    return [p.as_dict() for p in problems]


def _body(request) -> dict:
    """The request's JSON object; ValueError (with the message staff see) if it is not one."""
    try:
        data = json.loads(request.body or b"null")
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(_("The request is not valid JSON: %(error)s") % {"error": exc}) from exc
    if not isinstance(data, dict):
        raise ValueError(_("The request must be a JSON object."))
    return data


def _revision(data: dict) -> int | None:
    revision = data.get("revision")
    if revision is None:
        return None
    if isinstance(revision, bool) or not isinstance(revision, int):
        raise ValueError(_("The revision must be a whole number."))
    return revision


def _clean_settings(settings):
    # The panel leaves an empty goal object when staff clear the goal's event type: that means no goal.
    if isinstance(settings, dict) and isinstance(settings.get("goal"), dict):
        goal = settings["goal"]
        if not goal.get("event_type") and not goal.get("filters"):
            settings = {**settings, "goal": None}
    return settings


def _node_counts(version: JourneyVersion) -> dict:
    return journey_node_counts(version)


class JourneyDesignerMixin:
    """Adds the designer's page and endpoints to the journey's ModelAdmin."""

    def get_urls(self):
        wrap = self.admin_site.admin_view
        prefix = "<path:object_id>/designer/"
        return [
            path(prefix, wrap(self.designer_view), name="journeys_journey_designer"),
            path(
                f"{prefix}new-draft/",
                wrap(self.designer_new_draft_view),
                name="journeys_journey_designer_new_draft",
            ),
            path(
                f"{prefix}versions/<int:number>/graph/",
                wrap(self.designer_graph_view),
                name="journeys_journey_designer_graph",
            ),
            path(
                f"{prefix}versions/<int:number>/publish/",
                wrap(self.designer_publish_view),
                name="journeys_journey_designer_publish",
            ),
            path(
                f"{prefix}results/",
                wrap(self.designer_results_view),
                name="journeys_journey_designer_results",
            ),
            path(
                f"{prefix}versions/<int:number>/counts/",
                wrap(self.designer_counts_view),
                name="journeys_journey_designer_counts",
            ),
            *super().get_urls(),
        ]

    @admin.display(description=gettext_lazy("designer"))
    def designer_link(self, obj):
        if not obj or not obj.pk:
            return "—"
        url = reverse("admin:journeys_journey_designer", args=(obj.pk,))
        return format_html('<a href="{}" class="jd-open-designer">{}</a>', url, _("Open the designer"))

    def response_add(self, request, obj, post_url_continue=None):
        # A new journey is an entry and an exit: the next thing staff do is draw the rest.
        if "_addanother" not in request.POST and "_continue" not in request.POST:
            return redirect("admin:journeys_journey_designer", obj.pk)
        return super().response_add(request, obj, post_url_continue)

    # --- helpers ---------------------------------------------------------------------------------

    def _designer_journey(self, request, object_id, *, change: bool) -> Journey:
        allowed = self.has_change_permission(request) if change else self.has_view_permission(request)
        if not allowed:
            raise PermissionDenied
        try:
            return Journey.objects.get(pk=int(object_id))
        except (ValueError, Journey.DoesNotExist) as exc:
            raise Http404(_("No such journey.")) from exc

    def _designer_version(self, journey: Journey, number: int) -> JourneyVersion:
        try:
            return JourneyVersion.objects.get(journey=journey, number=number)
        except JourneyVersion.DoesNotExist as exc:
            raise Http404(_("This journey has no version %(number)s.") % {"number": number}) from exc

    def _version_payload(self, request, version: JourneyVersion) -> dict:
        return {
            "id": version.pk,
            "number": version.number,
            "status": version.status,
            "status_label": str(version.get_status_display()),
            "revision": version.revision,
            # Frozen versions are shown, never edited; a viewer without the change permission only looks.
            "readonly": version.status != VersionStatus.DRAFT or not self.has_change_permission(request),
        }

    def _version_urls(self, journey: Journey, version: JourneyVersion) -> dict:
        args = (journey.pk, version.number)
        return {
            "graph": reverse("admin:journeys_journey_designer_graph", args=args),
            "publish": reverse("admin:journeys_journey_designer_publish", args=args),
            "counts": reverse("admin:journeys_journey_designer_counts", args=args),
            "new_draft": reverse("admin:journeys_journey_designer_new_draft", args=(journey.pk,)),
            "results": reverse("admin:journeys_journey_designer_results", args=(journey.pk,)),
        }

    def _json_view(self, request, object_id, *, change: bool, handler):
        """Runs `handler(journey)`; turns the refusals staff can cause into JSON answers."""
        try:
            journey = self._designer_journey(request, object_id, change=change)
            return handler(journey)
        except PermissionDenied as exc:
            return _error(403, str(exc) or _("You do not have permission to change journeys."))
        except Http404 as exc:
            return _error(404, str(exc))
        except ValueError as exc:
            if isinstance(exc, GraphInvalid):
                return _error(
                    400,
                    _("The journey was not saved: fix the problems listed."),
                    problems=_problems(exc.problems),
                )
            if isinstance(exc, JourneyRefused):
                return _error(409, exc.message, code=exc.code)
            return _error(400, str(exc))

    # --- views -----------------------------------------------------------------------------------

    def designer_view(self, request, object_id):
        journey = self._designer_journey(request, object_id, change=False)
        versions = JourneyVersion.objects.filter(journey=journey)
        wanted = request.GET.get("version")
        version = None
        if wanted:
            version = versions.filter(number=int(wanted)).first() if wanted.isdigit() else None
            if version is None:
                raise Http404(_("This journey has no version %(number)s.") % {"number": wanted})
        version = (
            version
            or versions.filter(status=VersionStatus.DRAFT).first()
            or versions.filter(status=VersionStatus.PUBLISHED).first()
            or versions.order_by("-number").first()
        )
        if version is None:
            raise Http404(_("This journey has no version."))
        boot = {
            "lang": get_language(),
            "labels": designer.designer_labels(),
            "aria_labels": designer.designer_aria_labels(),
            "catalogue": designer.designer_catalogue(),
            "graph": version.graph,
            "settings": settings_normalised(version.settings),
            "version": self._version_payload(request, version),
            "journey": {"id": journey.pk, "name": journey.name, "status": journey.status},
            "urls": self._version_urls(journey, version),
            # Sent back in X-CSRFToken with every save, publish and new draft.
            "csrf_token": get_token(request),
            # Not computed here: the canvas fetches them from the counts endpoint once it is drawn, so the
            # page opens as fast with a million enrollments as with none (BENCHMARKS.md, designer).
            "counts": {},
            # The problems of the stored graph, so a draft saved with some shows them on opening.
            "problems": _problems(graph_validate(version.graph, settings=version.settings))
            if version.status == VersionStatus.DRAFT
            else [],
        }
        context = {
            **self.admin_site.each_context(request),
            "title": _("Design: %(name)s") % {"name": journey.name},
            "opts": self.model._meta,
            "original": journey,
            "journey": journey,
            "version": version,
            "versions": versions.order_by("-number"),
            "boot": boot,
            "built": finders.find(BUILD_PATH) is not None,
        }
        return TemplateResponse(request, "admin/journeys/journey/designer.html", context)

    @staticmethod
    def _method_check(request, allowed):
        if request.method not in allowed:
            return _error(405, _("Use %(methods)s.") % {"methods": " or ".join(allowed)})
        return None

    def designer_graph_view(self, request, object_id, number):
        refused = self._method_check(request, ("GET", "PUT"))
        if refused:
            return refused
        if request.method == "GET":
            return self._json_view(
                request, object_id, change=False, handler=lambda j: self._graph_get(request, j, number)
            )
        return self._json_view(
            request, object_id, change=True, handler=lambda j: self._graph_put(request, j, number)
        )

    def _graph_get(self, request, journey, number):
        version = self._designer_version(journey, number)
        return JsonResponse(
            {
                "graph": version.graph,
                "settings": version.settings,
                "version": self._version_payload(request, version),
                "counts": {} if version.status == VersionStatus.DRAFT else _node_counts(version),
            }
        )

    def _graph_put(self, request, journey, number):
        data = _body(request)
        if "graph" not in data:
            raise ValueError(_("The request names no graph."))
        version = self._designer_version(journey, number)
        if version.status != VersionStatus.DRAFT:
            raise JourneyRefused(
                "frozen", _("This version is published and frozen: make a new draft to change it.")
            )
        draft, problems = journey_graph_save(
            journey=journey,
            graph=data["graph"],
            settings=_clean_settings(data.get("settings")),
            base_revision=_revision(data),
            allow_problems=True,
            saved_by=request.user,
        )
        return JsonResponse(
            {"version": self._version_payload(request, draft), "problems": _problems(problems)}
        )

    def designer_publish_view(self, request, object_id, number):
        refused = self._method_check(request, ("POST",))
        if refused:
            return refused
        return self._json_view(
            request, object_id, change=True, handler=lambda j: self._publish(request, j, number)
        )

    def _publish(self, request, journey, number):
        # Editing a draft and publishing it are two permissions (journeys/roles.py).
        if not request.user.has_perm("journeys.publish_journey"):
            raise PermissionDenied(_("You do not have permission to publish journeys."))
        data = _body(request)
        revision = _revision(data)
        # Optional: what happens to the customers in flight (journeys/services/versions.py); they stay on
        # their version unless the request says "move" with a node mapping.
        in_flight = data.get("in_flight") or InFlight.STAY
        if in_flight not in InFlight.values:
            raise ValueError(_('in_flight must be "stay" or "move".'))
        with transaction.atomic():
            version = self._designer_version(journey, number)
            if version.status != VersionStatus.DRAFT:
                raise JourneyRefused("frozen", _("Only the draft can be published."))
            if revision is not None and revision != version.revision:
                raise JourneyRefused(
                    "stale",
                    _("Someone saved this journey since you opened it: reload it to see their changes."),
                )
            published = journey_publish(
                journey=journey,
                published_by=request.user,
                in_flight=in_flight,
                mapping=data.get("mapping") if in_flight == InFlight.MOVE else None,
                version_number=number,
            )
        migration = VersionMigration.objects.filter(to_version=published, mode=InFlight.MOVE).first()
        if migration is not None:
            # A first few batches; the beat task moves the rest (journeys/admin/publish.py does the same).
            version_migration_run(migration=migration, max_batches=PUBLISH_PAGE_BATCHES)
        return JsonResponse(
            {
                "version": self._version_payload(request, published),
                "problems": [],
                "counts": _node_counts(published),
            }
        )

    def designer_counts_view(self, request, object_id, number):
        refused = self._method_check(request, ("GET",))
        if refused:
            return refused

        def handler(journey):
            version = self._designer_version(journey, number)
            return JsonResponse({"counts": _node_counts(version)})

        return self._json_view(request, object_id, change=False, handler=handler)

    def designer_results_view(self, request, object_id):
        """Converted, and conversion and revenue against the holdout (the journey's, across versions).
        Not in the page itself: over a million enrollments it takes seconds (BENCHMARKS.md), and the
        canvas must open without waiting for it."""
        refused = self._method_check(request, ("GET",))
        if refused:
            return refused
        return self._json_view(
            request,
            object_id,
            change=False,
            handler=lambda journey: JsonResponse({"results": journey_results_display(journey=journey)}),
        )

    def designer_new_draft_view(self, request, object_id):
        refused = self._method_check(request, ("POST",))
        if refused:
            return refused

        def handler(journey):
            draft = journey_draft_create(journey=journey, created_by=request.user)
            url = reverse("admin:journeys_journey_designer", args=(journey.pk,))
            return JsonResponse({"version": self._version_payload(request, draft), "designer_url": url})

        return self._json_view(request, object_id, change=True, handler=handler)
