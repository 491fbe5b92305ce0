"""The publish page of a journey's draft (a mixin of the journey's ModelAdmin, as the designer is):

    GET/POST <journey>/publish/

Staff choose what happens to the customers in flight on the published version: they stay on it until
they finish, or they move node by node. For a move the page lists every node of the published version
with the customers at it now and a choice of the draft's nodes (prefilled where the ids match) or "exit".
The view is thin: journeys.services.journeys.journey_publish checks and stores the choice, and
journeys.services.versions.version_migration_run moves a first few batches right after; the beat task
moves the rest, and what a dispatcher held at that moment, within a minute or so."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from journeys.models import InFlight, Journey, JourneyVersion, VersionMigration, VersionStatus
from journeys.nodes import GraphInvalid, graph_entry, node_type_get
from journeys.services.journeys import JourneyRefused, journey_publish
from journeys.services.versions import (
    EXIT,
    MappingInvalid,
    version_live_counts,
    version_mapping_prefill,
    version_migration_run,
)

PUBLISH_PERMISSION = "journeys.publish_journey"
NODE_FIELD_PREFIX = "node__"
# Batches (of versions.DEFAULT_MIGRATION_BATCH) the publish request moves itself before answering.
PUBLISH_PAGE_BATCHES = 5


def _node_label(node: dict) -> str:
    node_type = node_type_get(node.get("type", ""))
    type_label = str(node_type.label) if node_type else node.get("type", "?")
    return f"{node['id']} · {type_label}"


class PublishForm(forms.Form):
    """The choice about customers in flight and, for a move, one select per node of the old version."""

    version = forms.IntegerField(widget=forms.HiddenInput)
    in_flight = forms.ChoiceField(
        label=gettext_lazy("Customers in flight"),
        choices=InFlight.choices,
        initial=InFlight.STAY,
        widget=forms.RadioSelect,
    )

    def __init__(self, *args, old: JourneyVersion | None, new: JourneyVersion, counts: dict, **kwargs):
        super().__init__(*args, **kwargs)
        self.old, self.new = old, new
        self.rows = []
        if old is None:
            return
        new_nodes = new.graph.get("nodes", [])
        new_entry = graph_entry(new.graph)
        old_entry = graph_entry(old.graph)
        prefill = version_mapping_prefill(old=old, new=new)
        for node in old.graph.get("nodes", []):
            node_id = node["id"]
            targets = [
                (n["id"], _node_label(n))
                for n in new_nodes
                # Customers in flight never start the journey again (versions.py): the entry is only
                # where the old entry's customers go.
                if n["id"] != new_entry or node_id == old_entry
            ]
            name = f"{NODE_FIELD_PREFIX}{node_id}"
            self.fields[name] = forms.ChoiceField(
                label=_node_label(node),
                choices=[(EXIT, _("Nowhere: these customers exit the journey")), *targets],
                initial=prefill.get(node_id, EXIT),
                required=False,
            )
            old_type = node.get("type")
            target = next((n for n in new_nodes if n["id"] == prefill.get(node_id)), None)
            self.rows.append(
                {
                    "node_id": node_id,
                    "field": name,
                    "count": counts.get(node_id, 0),
                    "type_changed": target is not None and target.get("type") != old_type,
                }
            )

    def mapping(self) -> dict[str, str]:
        return {row["node_id"]: self.cleaned_data.get(row["field"]) or EXIT for row in self.rows}

    def bound_rows(self):
        return [{**row, "bound": self[row["field"]]} for row in self.rows]


class JourneyPublishMixin:
    """Adds the publish page to the journey's ModelAdmin."""

    def get_urls(self):
        return [
            path(
                "<int:object_id>/publish/",
                self.admin_site.admin_view(self.publish_view),
                name="journeys_journey_publish",
            ),
            *super().get_urls(),
        ]

    def has_publish_permission(self, request, obj=None) -> bool:
        return request.user.has_perm(PUBLISH_PERMISSION)

    @staticmethod
    def publish_link(obj) -> str:
        url = reverse("admin:journeys_journey_publish", args=(obj.pk,))
        return format_html('<a href="{}" class="jd-open-publish">{}</a>', url, _("Publish the draft…"))

    def publish_view(self, request, object_id):
        if not self.has_publish_permission(request):
            raise PermissionDenied
        try:
            journey = Journey.objects.get(pk=int(object_id))
        except (ValueError, Journey.DoesNotExist) as exc:
            raise Http404(_("No such journey.")) from exc
        draft = JourneyVersion.objects.filter(journey=journey, status=VersionStatus.DRAFT).first()
        old = JourneyVersion.objects.filter(journey=journey, status=VersionStatus.PUBLISHED).first()
        context = {
            **self.admin_site.each_context(request),
            "title": _("Publish: %(name)s") % {"name": journey.name},
            "opts": self.model._meta,
            "original": journey,
            "journey": journey,
            "draft": draft,
            "old": old,
            "form": None,
            "problems": [],
        }
        if draft is None:
            return TemplateResponse(request, "admin/journeys/journey/publish.html", context)
        counts = version_live_counts(old) if old is not None else {}
        data = request.POST if request.method == "POST" else None
        form = PublishForm(data, old=old, new=draft, counts=counts, initial={"version": draft.number})
        context.update(form=form, rows=form.bound_rows(), in_flight_total=sum(counts.values()))
        if data is None or not form.is_valid():
            return TemplateResponse(request, "admin/journeys/journey/publish.html", context)
        in_flight = form.cleaned_data["in_flight"]
        try:
            published = journey_publish(
                journey=journey,
                published_by=request.user,
                in_flight=in_flight,
                mapping=form.mapping() if in_flight == InFlight.MOVE else None,
                version_number=form.cleaned_data["version"],
            )
        except MappingInvalid as exc:
            context["problems"] = exc.problems
        except GraphInvalid as exc:
            context["problems"] = [str(p) for p in exc.problems]
        except JourneyRefused as exc:
            context["problems"] = [exc.message]
        else:
            self._publish_done(request, published)
            return redirect("admin:journeys_journey_change", journey.pk)
        return TemplateResponse(request, "admin/journeys/journey/publish.html", context, status=400)

    def _publish_done(self, request, published: JourneyVersion) -> None:
        migration = VersionMigration.objects.filter(to_version=published).first()
        if migration is None or migration.mode == InFlight.STAY:
            messages.success(
                request,
                _("Version %(number)s is published; customers in flight stay on their version.")
                % {"number": published.number},
            )
            return
        # A bounded first pass, so the page answers in seconds whatever the journey's size; the beat task
        # moves the rest (and whatever a dispatcher held) within a minute or so.
        progress = version_migration_run(
            migration=migration, now=timezone.now(), max_batches=PUBLISH_PAGE_BATCHES
        )
        text = _("Version %(number)s is published: %(moved)s customers moved to it, %(exited)s exited.") % {
            "number": published.number,
            "moved": migration.moved,
            "exited": migration.exited,
        }
        if progress.left:
            text += " " + _(
                "%(left)s more are being moved in the background and will be done within a few minutes."
            ) % {"left": progress.left}
        messages.success(request, text)
