from __future__ import annotations

from django.contrib import admin, messages
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _
from unfold.admin import TabularInline

from crm.admin.base import HistoryAdmin, LargeTableAdmin, ReadOnlyAdmin
from journeys.admin.publish import JourneyPublishMixin
from journeys.admin_designer import JourneyDesignerMixin
from journeys.admin_library import JourneyLibraryMixin
from journeys.models import Enrollment, Journey, JourneyVersion, VersionStatus
from journeys.nodes import GraphInvalid
from journeys.reasons import reason_text
from journeys.services.journeys import (
    JourneyRefused,
    journey_archive,
    journey_create,
    journey_pause,
    journey_publish,
    journey_resume,
)


class JourneyVersionInline(TabularInline):
    model = JourneyVersion
    fields = ("number", "status", "revision", "updated_at", "published_at", "published_by")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = False

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(Journey)
class JourneyAdmin(JourneyLibraryMixin, JourneyDesignerMixin, JourneyPublishMixin, HistoryAdmin):
    list_display = ("name", "status", "published_version", "updated_at", "designer_link")
    list_filter = ("status",)
    search_fields = ("name",)
    fields = (
        "name",
        "description",
        "status",
        "current_version",
        "designer_link",
        "publish_page",
        "created_by",
        "created_at",
    )
    readonly_fields = (
        "status",
        "current_version",
        "designer_link",
        "publish_page",
        "created_by",
        "created_at",
    )
    inlines = [JourneyVersionInline]
    actions = ["publish_selected", "pause_selected", "resume_selected", "archive_selected"]

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("current_version")

    @admin.display(description=_("published version"), ordering="current_version__number")
    def published_version(self, obj):
        return obj.current_version.number if obj.current_version_id else "—"

    @admin.display(description=_("publish"))
    def publish_page(self, obj):
        if not obj or not obj.pk or not obj.versions.filter(status=VersionStatus.DRAFT).exists():
            return "—"
        return self.publish_link(obj)

    def has_pause_permission(self, request, obj=None) -> bool:
        return request.user.has_perm("journeys.pause_journey")

    def save_model(self, request, obj, form, change):
        if change:
            # Name and description only; the graph and the status change through the services.
            super().save_model(request, obj, form, change)
            return
        created = journey_create(name=obj.name, description=obj.description, created_by=request.user)
        obj.pk = created.pk
        obj._state.adding = False

    def has_delete_permission(self, request, obj=None):
        # Enrollments and their steps are the record of what customers were sent: archive instead.
        return False

    def _run(self, request, queryset, service, done_message):
        done = 0
        for journey in queryset.order_by("pk"):
            try:
                service(journey=journey)
                done += 1
            except (JourneyRefused, GraphInvalid) as exc:
                messages.error(request, f"{journey}: {exc}")
        if done:
            messages.success(request, done_message % {"n": done})

    @admin.action(description=_("Publish the draft of the selected journeys"), permissions=["publish"])
    def publish_selected(self, request, queryset):
        self._run(
            request,
            queryset,
            lambda journey: journey_publish(journey=journey, published_by=request.user),
            gettext("%(n)s journeys published."),
        )

    @admin.action(description=_("Pause the selected journeys"), permissions=["pause"])
    def pause_selected(self, request, queryset):
        self._run(request, queryset, journey_pause, gettext("%(n)s journeys paused."))

    @admin.action(description=_("Resume the selected journeys"), permissions=["pause"])
    def resume_selected(self, request, queryset):
        self._run(request, queryset, journey_resume, gettext("%(n)s journeys resumed."))

    @admin.action(description=_("Archive the selected journeys"), permissions=["pause"])
    def archive_selected(self, request, queryset):
        self._run(request, queryset, journey_archive, gettext("%(n)s journeys archived."))


@admin.register(Enrollment)
class EnrollmentAdmin(LargeTableAdmin, ReadOnlyAdmin):
    list_display = ("id", "journey", "customer_id", "node_id", "state", "arm", "entered_at", "due_at", "why")
    list_filter = ("state", "arm")
    list_select_related = ("journey",)
    raw_id_fields = ("customer",)
    search_fields = ("=customer__id",)

    @admin.display(description=_("why it ended"))
    def why(self, obj):
        return reason_text(obj.reason, obj.reason_params) if obj.reason else ""
