"""Message templates in the admin: one form with a field per channel field and language, problems shown
on their field with their line; the versions, read-only; a preview for any customer, and a test send.

The form's content fields are named `<channel>__<language>__<field>`; every save goes through
campaigns.services.templates.template_save (a new version when the content changed)."""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Q
from django.http import Http404, HttpResponseNotAllowed, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _
from unfold.admin import ModelAdmin, TabularInline
from unfold.widgets import UnfoldAdminTextareaWidget, UnfoldAdminTextInputWidget

from campaigns.models import Channel, MessageStatus, MessageTemplate, TemplateVersion
from campaigns.rendering import TemplateProblem
from campaigns.selectors import SENT_STATUSES, message_why
from campaigns.services.templates import (
    FieldProblem,
    TemplateInvalid,
    content_check,
    content_normalise,
    template_preview,
    template_save,
    template_test_send,
)
from crm.models import Customer

FIELD_LABELS = {
    "subject": _("subject"),
    "html": _("HTML body"),
    "text": _("text"),
    "title": _("title"),
    "body": _("body"),
    "template_id": _("WeChat template id"),
    "kind": _("kind"),
    "page": _("mini-program page"),
    "url": _("link (URL)"),
    "data": _("data fields"),
}
# (field, multi-line) per channel, as the form shows them.
FORM_FIELDS = {
    "email": (("subject", False), ("html", True), ("text", True)),
    "sms": (("text", True),),
    "push": (("title", False), ("body", True)),
    "wechat": (("template_id", False), ("kind", False), ("page", False), ("url", False), ("data", True)),
}
WECHAT_KINDS = (
    ("template", _("Template message (official account)")),
    ("subscribe", _("Subscription message")),
)


def field_name(channel: str, language: str, name: str) -> str:
    return f"{channel}__{language.replace('-', '_')}__{name}"


def data_to_text(data: dict) -> str:
    return "\n".join(f"{key}: {value}" for key, value in (data or {}).items())


def text_to_data(text: str) -> tuple[dict, list[str]]:
    """`thing1: {{ customer.name }}` lines into a mapping; lines without a colon are reported."""
    data, bad = {}, []
    for number, line in enumerate((text or "").splitlines(), start=1):
        if not line.strip():
            continue
        key, sep, value = line.partition(":")
        if not sep:
            bad.append(
                gettext("line %(line)s: write key: value (e.g. thing1: {{ customer.name }})")
                % {"line": number}
            )
            continue
        data[key.strip()] = value.strip()
    return data, bad


class MessageTemplateForm(forms.ModelForm):
    class Meta:
        model = MessageTemplate
        fields = ["code", "name", "channel", "purpose", "description", "coupon_programme"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.content: dict = {}
        current = self.instance.current_version.content if self.instance.current_version_id else {}
        for channel, fields in FORM_FIELDS.items():
            for language, language_name in settings.LANGUAGES:
                stored = current.get(language, {}) if self.instance.channel == channel else {}
                for name, multiline in fields:
                    label = f"{FIELD_LABELS[name]} ({language_name})"
                    key = field_name(channel, language, name)
                    if name == "kind":
                        self.fields[key] = forms.ChoiceField(
                            label=label,
                            choices=WECHAT_KINDS,
                            required=False,
                            initial=stored.get("kind") or "template",
                        )
                        continue
                    widget = (
                        UnfoldAdminTextareaWidget(attrs={"rows": 8 if name == "html" else 4})
                        if multiline
                        else UnfoldAdminTextInputWidget()
                    )
                    initial = data_to_text(stored.get("data")) if name == "data" else stored.get(name, "")
                    help_text = (
                        _("One line per field: key: template, e.g. thing1: {{ customer.name }}")
                        if name == "data"
                        else ""
                    )
                    self.fields[key] = forms.CharField(
                        label=label,
                        required=False,
                        widget=widget,
                        initial=initial,
                        help_text=help_text,
                        strip=False,
                    )
        if self.instance.pk:
            self.fields["channel"].disabled = True  # a template's fields are its channel's

    def content_from_fields(self, channel: str) -> tuple[dict, list[tuple[str, str]]]:
        content, errors = {}, []
        for language, _name in settings.LANGUAGES:
            values = {}
            for name, _multiline in FORM_FIELDS.get(channel, ()):
                key = field_name(channel, language, name)
                raw = self.cleaned_data.get(key) or ""
                if name == "data":
                    data, bad = text_to_data(raw)
                    errors += [(key, message) for message in bad]
                    if data:
                        values["data"] = data
                elif name == "kind":
                    values["kind"] = raw or "template"
                elif raw.strip():
                    values[name] = raw
            # A language is a variant when anything but the WeChat kind is filled in.
            if any(v for k, v in values.items() if k != "kind"):
                content[language] = values
        return content, errors

    def clean(self):
        cleaned = super().clean()
        channel = cleaned.get("channel") or self.instance.channel
        if not channel:
            return cleaned
        content, errors = self.content_from_fields(channel)
        for key, message in errors:
            self.add_error(key, message)
        if not content:
            first = settings.LANGUAGES[0][0]
            required = FORM_FIELDS[channel][0][0] if channel != "wechat" else "template_id"
            self.add_error(field_name(channel, first, required), gettext("Fill in at least one language."))
            return cleaned
        content = content_normalise(channel=channel, content=content)
        for problem in content_check(
            channel=channel, content=content, coupon_programme=cleaned.get("coupon_programme")
        ):
            self.add_error(*self._problem_to_error(channel, problem))
        self.content = content
        return cleaned

    def _problem_to_error(self, channel: str, problem: FieldProblem):
        if problem.field == "coupon_programme":
            return "coupon_programme", problem.problem.text()
        name = problem.field[0] if isinstance(problem.field, tuple) else problem.field
        key = field_name(channel, problem.language, name) if problem.language else None
        text = problem.problem.text()
        if isinstance(problem.field, tuple):
            text = f"{problem.field[1]}: {text}"
        return (key if key in self.fields else None), text


class TemplateVersionInline(TabularInline):
    model = TemplateVersion
    extra = 0
    can_delete = False
    show_change_link = False
    fields = ["number", "created_at", "created_by", "languages", "fingerprint_short"]
    readonly_fields = fields
    ordering = ["-number"]
    verbose_name_plural = _("versions (read-only: every saved change is a new version)")

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description=_("languages"))
    def languages(self, obj):
        return ", ".join(obj.content or {})

    @admin.display(description=_("fingerprint"))
    def fingerprint_short(self, obj):
        return obj.fingerprint[:12]


@admin.register(MessageTemplate)
class MessageTemplateAdmin(ModelAdmin):
    form = MessageTemplateForm
    list_display = ["code", "name", "channel", "purpose", "version_number", "updated_at"]
    list_filter = ["channel", "purpose"]
    search_fields = ["code", "name"]
    inlines = [TemplateVersionInline]
    change_form_template = "admin/campaigns/messagetemplate/change_form.html"

    @admin.display(description=_("version"), ordering="current_version__number")
    def version_number(self, obj):
        return obj.current_version.number if obj.current_version_id else "—"

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("current_version")

    def get_fieldsets(self, request, obj=None):
        head = (None, {"fields": ["code", "name", "channel", "purpose", "description", "coupon_programme"]})
        channels = [obj.channel] if obj is not None and obj.pk else list(FORM_FIELDS)
        sets = [head]
        for channel in channels:
            for language, language_name in settings.LANGUAGES:
                sets.append(
                    (
                        f"{Channel(channel).label} · {language_name}",
                        {
                            "fields": [field_name(channel, language, n) for n, _m in FORM_FIELDS[channel]],
                            "classes": [f"channel-{channel}"],
                            "description": _("Only the fields of the chosen channel are saved.")
                            if len(channels) > 1
                            else "",
                        },
                    )
                )
        return sets

    def get_form(self, request, obj=None, change=False, **kwargs):
        # The content fields are the form's own (made per language in __init__), not the model's.
        kwargs["fields"] = MessageTemplateForm.Meta.fields
        return super().get_form(request, obj, change=change, **kwargs)

    def save_model(self, request, obj, form, change):
        # The service saves the template and, when the content changed, a new version.
        try:
            template_save(template=obj, content=form.content, user=request.user, now=timezone.now())
        except TemplateInvalid as exc:  # pragma: no cover - the form ran the same checks
            raise PermissionDenied(str(exc)) from None

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path("<int:pk>/preview/", wrap(self.preview_view), name="campaigns_messagetemplate_preview"),
            path(
                "<int:pk>/test-send/", wrap(self.test_send_view), name="campaigns_messagetemplate_test_send"
            ),
            *super().get_urls(),
        ]

    def _template_or_404(self, request, pk) -> MessageTemplate:
        template = self.get_object(request, str(pk))
        if template is None:
            raise Http404(gettext("No template with id %(id)s.") % {"id": pk})
        return template

    def preview_view(self, request, pk):
        if not self.has_view_permission(request):
            raise PermissionDenied
        template = self._template_or_404(request, pk)
        query = (request.GET.get("q") or "").strip()[:100]
        found = customers_search(query) if query else []
        customer, variants, problem = None, [], None
        customer_id = request.GET.get("customer") or ""
        if customer_id:
            if not customer_id.isdigit():
                problem = gettext("The customer must be given by its id.")
            else:
                customer = Customer.objects.filter(pk=int(customer_id), erased_at__isnull=True).first()
                if customer is None:
                    problem = gettext("No customer with id %(id)s.") % {"id": customer_id}
        if customer is not None and template.current_version_id:
            variants = template_preview(
                version=template.current_version, customer=customer, now=timezone.now()
            )
        languages = dict(settings.LANGUAGES)
        # Staff read the language's and the fields' names, not their codes.
        shown = [
            {
                "variant": v,
                "language_name": languages.get(v.language, v.language),
                "fields": [(name, FIELD_LABELS.get(name, name), value) for name, value in v.content.items()],
            }
            # What this customer gets first; the other languages after it.
            for v in sorted(variants, key=lambda v: not v.chosen)
        ]
        default_address = request.user.email if template.channel == "email" else ""
        context = {
            **self.admin_site.each_context(request),
            "title": gettext("Preview of %(template)s") % {"template": template},
            "opts": self.model._meta,
            "original": template,
            "template_obj": template,
            "query": query,
            "found": found,
            "customer": customer,
            "variants": variants,
            "variant_rows": shown,
            "problem": problem,
            "default_address": default_address,
            "can_send": self.has_change_permission(request, template),
        }
        return TemplateResponse(request, "admin/campaigns/messagetemplate/preview.html", context)

    def test_send_view(self, request, pk):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        template = self._template_or_404(request, pk)
        if not self.has_change_permission(request, template):
            raise PermissionDenied
        customer_id = request.POST.get("customer") or ""
        address = (request.POST.get("address") or "").strip()[:254]
        back = (
            reverse("admin:campaigns_messagetemplate_preview", args=[template.pk])
            + f"?customer={customer_id}"
        )
        customer = Customer.objects.filter(pk=int(customer_id)).first() if customer_id.isdigit() else None
        if customer is None or not address:
            messages.error(
                request, gettext("Choose a customer and give the address or phone to send the test to.")
            )
            return HttpResponseRedirect(back)
        try:
            message = template_test_send(
                template=template, customer=customer, address=address, user=request.user
            )
        except (TemplateProblem, ValueError) as exc:
            messages.error(request, gettext("The test could not be sent: %(error)s") % {"error": exc})
            return HttpResponseRedirect(back)
        # The pipeline ran in this request: say how it ended (sent, or why not), not just that it was asked.
        values = {
            "id": message.pk,
            "address": message.address or address,
            "status": message.get_status_display(),
        }
        why = message_why(message, tz=timezone.get_current_timezone(), now=timezone.now())
        if message.status in SENT_STATUSES:
            messages.success(request, gettext("Test message #%(id)s to %(address)s: %(status)s.") % values)
        elif message.status in (MessageStatus.QUEUED, MessageStatus.DEFERRED, MessageStatus.SENDING):
            messages.warning(
                request,
                gettext("Test message #%(id)s to %(address)s: %(status)s (%(why)s).")
                % {**values, "why": why or gettext("waiting for the dispatcher")},
            )
        else:
            messages.error(
                request,
                gettext("Test message #%(id)s to %(address)s: %(status)s (%(why)s).")
                % {**values, "why": why or message.get_status_display()},
            )
        return HttpResponseRedirect(back)


def customers_search(query: str, limit: int = 20) -> list[Customer]:
    """Customers by external id, phone or email (whole), or by the start of their name or phone."""
    condition = (
        Q(external_id=query) | Q(email=query.lower()) | Q(name__startswith=query) | Q(phone__startswith=query)
    )
    if query.isdigit():
        condition |= Q(pk=int(query))
    return list(Customer.objects.filter(condition, erased_at__isnull=True).order_by("-id")[:limit])
