"""Server-to-server API keys: created here (the secret shown once), revoked, never deleted."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _
from unfold.admin import ModelAdmin

from crm.api.authentication import api_key_create
from crm.models import ApiKey


class ApiKeyForm(forms.ModelForm):
    scopes = forms.MultipleChoiceField(
        label=_("scopes"), choices=ApiKey.Scope.choices, widget=forms.CheckboxSelectMultiple
    )

    class Meta:
        model = ApiKey
        fields = ("name", "scopes")


@admin.register(ApiKey)
class ApiKeyAdmin(ModelAdmin):
    """The secret is made by api_key_create and shown once, on the page that follows creation; only its
    hash is stored. Keys are revoked, never deleted, so the record of who held which key stays."""

    form = ApiKeyForm
    list_display = (
        "name",
        "prefix",
        "scopes_display",
        "created_by",
        "created_at",
        "last_used_at",
        "revoked_at",
    )
    list_filter = (("revoked_at", admin.EmptyFieldListFilter),)
    list_select_related = ("created_by",)
    search_fields = ("name", "prefix")
    actions = ("revoke_selected",)

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return ()
        readonly = ("prefix", "created_by", "created_at", "last_used_at", "revoked_at")
        return (*readonly, "name", "scopes") if obj.revoked_at else readonly

    def get_fields(self, request, obj=None):
        fields = ["name", "scopes"]
        return (
            fields
            if obj is None
            else [*fields, "prefix", "created_by", "created_at", "last_used_at", "revoked_at"]
        )

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description=_("scopes"))
    def scopes_display(self, obj):
        return ", ".join(obj.scopes)

    def save_model(self, request, obj, form, change):
        if change:
            return super().save_model(request, obj, form, change)
        key, token = api_key_create(name=obj.name, scopes=list(obj.scopes), created_by=request.user)
        # The admin goes on with `obj` (log entry, redirect): make it the row just created.
        for field in ApiKey._meta.concrete_fields:
            setattr(obj, field.attname, getattr(key, field.attname))
        obj._state.adding = False
        obj._state.db = key._state.db
        request._api_key_token = token

    def response_add(self, request, obj, post_url_continue=None):
        token = getattr(request, "_api_key_token", None)
        if token is None:
            return super().response_add(request, obj, post_url_continue)
        # Rendered, not redirected: the secret never travels through the message cookie or the session.
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": gettext("API key created"),
            "key": obj,
            "token": token,
        }
        return TemplateResponse(
            request, "admin/crm/apikey/created.html", context
        )  # admin views are never_cache

    @admin.action(description=_("Revoke selected API keys"), permissions=["change"])
    def revoke_selected(self, request, queryset):
        count = queryset.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
        messages.success(request, gettext("%(count)d API key(s) revoked.") % {"count": count})
