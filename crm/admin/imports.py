"""Admin for CSV imports: upload a file (customers or orders, optionally a dry run), and follow the job the
worker runs: status, rows processed of the total, counts and the rejected lines.

The upload only stores the file and queues `crm.tasks.import_job_run` once the job row is committed; the
import itself (crm/services/imports/) runs in the worker.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.http import HttpResponseRedirect
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _
from unfold.admin import ModelAdmin

from crm.models import ImportJob
from crm.services.imports.jobs import import_job_submit, import_jobs_requeue
from crm.services.imports.messages import message_text, messages_text

MAX_UPLOAD_BYTES = 500 * 1024 * 1024
REFRESH_SECONDS = 3


class ImportUploadForm(forms.ModelForm):
    class Meta:
        model = ImportJob
        fields = ["kind", "file", "dry_run"]
        help_texts = {
            "file": _(
                'A CSV file, UTF-8 (Excel: "CSV UTF-8") or GBK. Orders need the columns customer_external_id, '
                "order_external_id, ordered_at, amount; customers need external_id."
            ),
            "dry_run": _("Check the file and report what would change, without writing anything."),
        }

    def clean_file(self):
        upload = self.cleaned_data["file"]
        if not upload.name.lower().endswith((".csv", ".txt")):
            raise forms.ValidationError(_("Upload a .csv file."))
        if upload.size > MAX_UPLOAD_BYTES:
            raise forms.ValidationError(
                _("The file is larger than 500 MB; split it or use the import command.")
            )
        return upload


@admin.register(ImportJob)
class ImportJobAdmin(ModelAdmin):
    list_display = [
        "id",
        "kind",
        "original_name",
        "dry_run",
        "status",
        "progress",
        "created_count",
        "updated_count",
        "unchanged_count",
        "error_count",
        "created_by",
        "created_at",
    ]
    list_filter = ["kind", "status", "dry_run"]
    list_select_related = ["created_by"]
    search_fields = ["original_name"]
    date_hierarchy = "created_at"
    actions = ["run_again"]
    readonly_fields = [
        "kind",
        "original_name",
        "file",
        "dry_run",
        "status",
        "progress",
        "created_count",
        "updated_count",
        "unchanged_count",
        "error_count",
        "outcome_text",
        "error_list",
        "created_by",
        "created_at",
        "finished_at",
        "worker",
        "lease_claims",
    ]
    fieldsets = [
        (None, {"fields": ["kind", "original_name", "file", "dry_run", "created_by", "created_at"]}),
        (
            _("Progress"),
            {
                "fields": [
                    "status",
                    "progress",
                    "created_count",
                    "updated_count",
                    "unchanged_count",
                    "error_count",
                    "finished_at",
                    "worker",
                    "lease_claims",
                    "outcome_text",
                ]
            },
        ),
        (_("Rejected rows"), {"fields": ["error_list"]}),
    ]

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            kwargs["form"] = ImportUploadForm
        return super().get_form(request, obj, change=change, **kwargs)

    def get_fieldsets(self, request, obj=None):
        if obj is None:
            return [(None, {"fields": ["kind", "file", "dry_run"]})]
        return self.fieldsets

    def get_readonly_fields(self, request, obj=None):
        return [] if obj is None else self.readonly_fields

    def has_change_permission(self, request, obj=None):
        return False  # a job is a record of what happened: view it, run it again, or delete it

    def save_model(self, request, obj, form, change):
        if change:
            return super().save_model(request, obj, form, change)
        import_job_submit(job=obj, created_by=request.user)

    def response_add(self, request, obj, post_url_continue=None):
        self.message_user(
            request, gettext("The import was queued; this page shows its progress."), messages.SUCCESS
        )
        return HttpResponseRedirect(reverse("admin:crm_importjob_change", args=[obj.pk]))

    def change_view(self, request, object_id, form_url="", extra_context=None):
        response = super().change_view(request, object_id, form_url, extra_context)
        job = ImportJob.objects.filter(pk=object_id).only("status").first()
        if job and job.status in (ImportJob.Status.QUEUED, ImportJob.Status.RUNNING):
            response["Refresh"] = str(REFRESH_SECONDS)  # follow the progress without a script
        return response

    @admin.display(description=_("progress"))
    def progress(self, obj: ImportJob) -> str:
        if not obj.total_rows:
            return f"{obj.processed_rows:,}"
        share = min(100, 100 * obj.processed_rows // obj.total_rows)
        return f"{obj.processed_rows:,} / {obj.total_rows:,} ({share}%)"

    @admin.display(description=_("worker"))
    def worker(self, obj: ImportJob) -> str:
        if obj.status not in (ImportJob.Status.QUEUED, ImportJob.Status.RUNNING):
            return obj.lease_holder or "-"
        if obj.lease_lapsed:
            return gettext("No worker has answered in time; the job will be resumed by the next worker.")
        if obj.lease_token:
            return gettext("Running on %(worker)s") % {"worker": obj.lease_holder}
        return gettext("Waiting for a worker")

    @admin.display(description=_("message"))
    def outcome_text(self, obj: ImportJob) -> str:
        """In the reader's language: the outcome is stored as codes (a job from before, as its text)."""
        if obj.outcome:
            return messages_text(obj.outcome)
        return message_text({"message": obj.message})

    @admin.display(description=_("errors"))
    def error_list(self, obj: ImportJob):
        if not obj.errors:
            return gettext("None")
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            ((e.get("line", ""), e.get("field", ""), message_text(e)) for e in obj.errors),
        )
        more = ""
        if obj.error_count > len(obj.errors):
            more = format_html(
                "<p>{}</p>",
                gettext("%(shown)d of %(count)d rejected rows listed.")
                % {"shown": len(obj.errors), "count": obj.error_count},
            )
        return format_html(
            "<table><thead><tr><th>{}</th><th>{}</th><th>{}</th></tr></thead><tbody>{}</tbody></table>{}",
            gettext("line"),
            gettext("column"),
            gettext("reason"),
            rows,
            more,
        )

    @admin.action(description=_("Run the selected imports again"), permissions=["add"])
    def run_again(self, request, queryset):
        """Finished jobs run again; a running job whose worker died is resumed; one a live worker is running
        is left alone (the service decides, with a conditional update per job)."""
        selected = list(queryset)
        jobs = import_jobs_requeue(jobs=selected)
        self.message_user(
            request,
            ngettext("%(count)d import queued again.", "%(count)d imports queued again.", len(jobs))
            % {"count": len(jobs)},
            messages.SUCCESS,
        )
        running = len(selected) - len(jobs)
        if running:
            self.message_user(
                request,
                ngettext(
                    "%(count)d import is running on a live worker and was left alone.",
                    "%(count)d imports are running on a live worker and were left alone.",
                    running,
                )
                % {"count": running},
                messages.WARNING,
            )
