"""The staff admin of the CDP: the customer list and search, the customer 360 page, consent and tag edits,
manual merges, privacy requests, and read-only views of the append-only tables.

Built for a million customers: the customer list never counts the whole table (crm.paginators), search
runs a few targeted index lookups instead of Django's OR of icontains across joins, and the 360 page
issues a fixed number of queries however much data the customer has.

Writes go through the services (consent_set, customer_merge, customer_erase, customer_tag_add, ...);
the admin only validates the shape of what staff typed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection, transaction
from django.db.models import F, Lookup, Prefetch, Q
from django.http import Http404, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import mark_safe
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _
from simple_history.admin import SimpleHistoryAdmin

from crm.api.authentication import api_key_create
from crm.models import (
    ApiKey,
    ConsentChange,
    ConsentChannel,
    ConsentStatus,
    Customer,
    CustomerIdentity,
    CustomerMerge,
    CustomerTag,
    Event,
    Order,
    OrderLine,
    PrivacyRequest,
    Product,
    Refund,
    Tag,
)
from crm.paginators import EstimatedCountPaginator
from crm.selectors import customer_timeline
from crm.services.consent import consent_set
from crm.services.customers import MergeRefused, customer_identities_sync, customer_merge, identity_owner_id
from crm.services.identities import normalise_phone
from crm.services.privacy import PrivacyRefused, customer_erase, customer_erase_preview, customer_export_data
from crm.services.tags import TagRefused, customer_tag_add, customer_tag_remove

# --- Search ---------------------------------------------------------------------------------------

# How many customers one identifier lookup may return before the search gives up on it.
IDENTITY_MATCH_LIMIT = 500
_EMAIL_LIKE = re.compile(r"^[^@\s]*@[^@\s]*$")
_PHONE_LIKE = re.compile(r"^\+?[\d\s\-().]{5,}$")


class _ILike(Lookup):
    """`name ILIKE '%term%'`, which the trigram GIN index (crm_customer_name_trgm) answers. Django's own
    icontains compiles to UPPER(name) LIKE UPPER(...), which that index cannot serve. Used as an
    expression in filter(), never registered on the field."""

    lookup_name = "ilike"
    prepare_rhs = False

    def as_sql(self, compiler, connection):
        lhs, lhs_params = self.process_lhs(compiler, connection)
        rhs, rhs_params = self.process_rhs(compiler, connection)
        return f"{lhs} ILIKE {rhs}", [*lhs_params, *rhs_params]


def _name_matches(term: str) -> Q:
    if len(term) < 3:
        # Fewer than three characters make no trigram: a substring search would scan the table. A prefix
        # (a surname, or surname and first given character) is what staff type, and the index
        # crm_customer_name_upper_prefix serves Django's istartswith.
        return Q(name__istartswith=term)
    if connection.vendor == "postgresql":
        pattern = "%" + connection.ops.prep_for_like_query(term) + "%"
        return Q(_ILike(F("name"), pattern))
    return Q(name__icontains=term)


def customer_search_filter(term: str) -> Q:
    """A filter for the customer list from what staff typed in the search box: an exact identifier of any
    kind, then by the shape of the term an email (exact or prefix), a phone (normalised, exact or
    prefix), a customer id or external id, or a name (substring). Every branch is one index lookup."""
    term = term.strip()
    candidates = {term, term.lower()}
    q = Q()
    if "@" in term and _EMAIL_LIKE.match(term):
        q |= Q(email__startswith=term.lower())  # the exact address is its own prefix
    elif _PHONE_LIKE.match(term):
        phone = normalise_phone(term)
        digits = phone.lstrip("+")
        candidates |= {phone, digits}
        q |= Q(phone__startswith=phone)
        if not phone.startswith("+"):
            q |= Q(phone__startswith="+86" + digits)  # a mainland number typed without its country code
        if digits.isdigit() and len(digits) <= 18:
            q |= Q(pk=int(digits))
        q |= Q(external_id=term)
    else:
        if term.startswith("#") and term[1:].isdigit() and len(term) <= 19:
            q |= Q(pk=int(term[1:]))
        q |= Q(external_id=term)
        if not any(ch.isdigit() for ch in term):
            # Names carry no digits; a term with digits is an id (openid, buyer id), and a 30-character
            # id would cost the trigram index dozens of posting lists for nothing.
            q |= _name_matches(term)
    # Identifiers (openids, buyer ids, device ids, and emails and phones stored as identities) are looked
    # up first, by the indexed value, so the main query stays an OR of index scans on one table.
    identity_ids = list(
        CustomerIdentity.objects.filter(value__in=sorted(candidates)).values_list("customer_id", flat=True)[
            :IDENTITY_MATCH_LIMIT
        ]
    )
    if identity_ids:
        q |= Q(pk__in=sorted(set(identity_ids)))
    return q


# --- Filters --------------------------------------------------------------------------------------


class ErasedFilter(admin.SimpleListFilter):
    title = _("erased")
    parameter_name = "erased"

    def lookups(self, request, model_admin):
        return [("no", _("No")), ("yes", _("Yes"))]

    def queryset(self, request, queryset):
        if self.value() == "no":
            return queryset.filter(erased_at__isnull=True)
        if self.value() == "yes":
            return queryset.filter(erased_at__isnull=False)
        return queryset


class EventTypeFilter(admin.SimpleListFilter):
    """Event types listed without a SELECT DISTINCT over the whole log: on PostgreSQL a recursive query
    hops through the (type, occurred_at) index one type at a time (a "loose index scan")."""

    title = _("type")
    parameter_name = "type"
    max_types = 200

    def lookups(self, request, model_admin):
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(
                    """
                    WITH RECURSIVE t(type) AS (
                        (SELECT type FROM crm_event ORDER BY type LIMIT 1)
                        UNION ALL
                        SELECT (SELECT e.type FROM crm_event e WHERE e.type > t.type ORDER BY e.type LIMIT 1)
                        FROM t WHERE t.type IS NOT NULL
                    )
                    SELECT type FROM t WHERE type IS NOT NULL LIMIT %s
                    """,
                    [self.max_types],
                )
                types = [row[0] for row in cursor.fetchall()]
        else:
            types = list(
                Event.objects.order_by("type").values_list("type", flat=True).distinct()[: self.max_types]
            )
        return [(t, t) for t in types]

    def queryset(self, request, queryset):
        return queryset.filter(type=self.value()) if self.value() else queryset


# --- Shared pieces --------------------------------------------------------------------------------


def customer_link(customer_id, customer=None) -> str:
    """A link to the customer's 360 page: "#id" alone in lists (naming every row's customer would read
    crm_customer for each row of tables with millions), with the name when `customer` is given."""
    if customer_id is None:
        return "—"
    url = reverse("admin:crm_customer_change", args=[customer_id])
    if customer is None:
        return format_html('<a href="{}">#{}</a>', url, customer_id)
    return format_html('<a href="{}">{} (#{})</a>', url, customer, customer_id)


class CustomerColumnsMixin:
    """`customer_display` for a list's column, `customer_detail` for one record's page (one more query
    there, to show whose record it is)."""

    @admin.display(description=_("customer"), ordering="customer_id")
    def customer_display(self, obj):
        return customer_link(obj.customer_id)

    @admin.display(description=_("customer"))
    def customer_detail(self, obj):
        return customer_link(obj.customer_id, obj.customer if obj.customer_id else None)


class LargeTableChangeList(ChangeList):
    def get_results(self, request):
        super().get_results(request)
        # A filtered list that fits on one page is shown by Django from the whole queryset, which would run
        # the search a second time; the paginator already holds the matching ids, so read the rows by them.
        if (
            isinstance(self.paginator, EstimatedCountPaginator)
            and not self.multi_page
            and not (self.show_all and self.can_show_all)
            and self.paginator._is_filtered()
        ):
            self.result_list = self.paginator.page(1).object_list


class LargeTableAdmin(admin.ModelAdmin):
    """Lists of tables that grow to millions of rows: no full count, no facet counts."""

    paginator = EstimatedCountPaginator
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    list_per_page = 50

    def get_changelist(self, request, **kwargs):
        return LargeTableChangeList

    @admin.display(description=mark_safe('<input type="checkbox" id="action-toggle">'))
    def action_checkbox(self, obj):
        # The same markup as Django's, without rendering a form widget template per row: on a 50-row
        # page that template was a fifth of the page's CPU time.
        return format_html(
            '<input type="checkbox" name="{}" value="{}" class="action-select" aria-label="{}">',
            admin.helpers.ACTION_CHECKBOX_NAME,
            obj.pk,
            format_html(gettext("Select this object for an action - {}"), obj),
        )


class ReadOnlyAdmin(admin.ModelAdmin):
    """Append-only or derived records: staff may look, never add, edit or delete."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


def _pretty_json(value) -> str:
    return format_html(
        '<pre class="c360-json">{}</pre>', json.dumps(value, ensure_ascii=False, indent=2, sort_keys=True)
    )


# --- Customer 360 ---------------------------------------------------------------------------------

TIMELINE_PAGE_SIZE = 50
TIMELINE_MAX_PAGE = 2_000
ORDERS_SHOWN = 10
CONSENT_CHANGES_SHOWN = 20
HISTORY_SHOWN = 12
RECORDS_SHOWN = 20
TAG_CHOICES_MAX = 300


@dataclass(frozen=True)
class Customer360Panel:
    """A panel a later app adds to the customer 360 page, in one of the slots below.

    `context(request, customer)` must run a fixed number of queries (the page's query count is pinned);
    its result is available to `template_name` as `panel_context`."""

    slot: str
    title: str
    template_name: str
    context: Callable | None = None


CUSTOMER_360_SLOTS = {
    "points": _("Points and tier"),
    "messages": _("Messages"),
    "journeys": _("Journeys"),
    "metrics": _("Metrics"),
}
_customer_360_panels: dict[str, Customer360Panel] = {}


def customer_360_panel_register(panel: Customer360Panel) -> None:
    """Fill a slot of the customer 360 page. Apps to the right of crm call this from their AppConfig.ready()
    or admin module, so crm never imports them."""
    if panel.slot not in CUSTOMER_360_SLOTS:
        raise ValueError(f"unknown customer 360 slot {panel.slot!r}; slots: {', '.join(CUSTOMER_360_SLOTS)}")
    _customer_360_panels[panel.slot] = panel


def _page_number(value, maximum: int) -> int:
    try:
        return min(max(int(value), 1), maximum)
    except (TypeError, ValueError):
        return 1


def _field_label(model, name: str) -> str:
    try:
        return str(model._meta.get_field(name).verbose_name)
    except Exception:
        return name


def _recent_changes(customer: Customer) -> list[dict]:
    """The latest audit history of the customer, its identifiers and its tags, newest first, each with
    who did it and (for the customer) the fields before and after. Three queries."""
    records = list(
        Customer.history.filter(id=customer.pk)
        .select_related("history_user")
        .order_by("-history_date", "-history_id")[: HISTORY_SHOWN + 1]
    )
    changes = []
    for index, newer in enumerate(records[:HISTORY_SHOWN]):
        # The record after the last one shown is fetched only to diff against.
        older = records[index + 1] if index + 1 < len(records) else None
        fields = []
        if older is not None and newer.history_type == "~":
            delta = newer.diff_against(older)
            fields = [
                {"field": _field_label(Customer, c.field), "old": c.old, "new": c.new} for c in delta.changes
            ]
        changes.append(
            {
                "at": newer.history_date,
                "user": newer.history_user,
                "what": gettext("Profile"),
                "type": newer.history_type,
                "fields": fields,
            }
        )
    identity_history = CustomerIdentity.history.filter(customer_id=customer.pk)
    for record in identity_history.select_related("history_user").order_by("-history_date")[:HISTORY_SHOWN]:
        changes.append(
            {
                "at": record.history_date,
                "user": record.history_user,
                "what": gettext("Identifier %(kind)s: %(value)s")
                % {"kind": record.kind, "value": record.value},
                "type": record.history_type,
                "fields": [],
            }
        )
    tag_history = CustomerTag.history.filter(customer_id=customer.pk).select_related("history_user", "tag")
    for record in tag_history.order_by("-history_date")[:HISTORY_SHOWN]:
        changes.append(
            {
                "at": record.history_date,
                "user": record.history_user,
                "what": gettext("Tag %(name)s") % {"name": record.tag.name if record.tag else record.tag_id},
                "type": record.history_type,
                "fields": [],
            }
        )
    changes.sort(key=lambda c: c["at"], reverse=True)
    return changes[:HISTORY_SHOWN]


def _properties_summary(properties, limit: int = 120) -> str:
    if not properties:
        return ""
    text = json.dumps(properties, ensure_ascii=False, separators=(",", ":"), sort_keys=True, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def customer_360_context(request, customer: Customer, *, model_admin) -> dict:
    """Everything the 360 page shows, in a fixed number of queries whatever the customer's size."""
    user = request.user
    timeline_page = _page_number(request.GET.get("timeline"), TIMELINE_MAX_PAGE)
    offset = (timeline_page - 1) * TIMELINE_PAGE_SIZE
    # One row more than a page tells whether there is an older page, without counting the timeline.
    events = list(customer_timeline(customer_id=customer.pk)[offset : offset + TIMELINE_PAGE_SIZE + 1])

    orders_qs = Order.objects.filter(customer=customer)
    orders = list(
        orders_qs.order_by("-placed_at", "-id").prefetch_related(
            Prefetch("lines", queryset=OrderLine.objects.order_by("line_no")),
            Prefetch("refunds", queryset=Refund.objects.order_by("refunded_at", "id")),
        )[:ORDERS_SHOWN]
    )
    current = {c.channel: c for c in customer.consents.all()}
    tags = list(customer.customer_tags.select_related("tag").order_by("tag__name"))
    can_edit_tags = not customer.is_erased and user.has_perm("crm.add_customertag")
    tag_choices = []
    if can_edit_tags:
        tagged = {t.tag_id for t in tags}
        tag_choices = [
            t
            for t in Tag.objects.filter(kind=Tag.Kind.MANUAL).order_by("name")[:TAG_CHOICES_MAX]
            if t.pk not in tagged
        ]
    slots = {}
    for key, title in CUSTOMER_360_SLOTS.items():
        panel = _customer_360_panels.get(key)
        slots[key] = {
            "key": key,
            "title": panel.title if panel else title,
            "panel": panel,
            "panel_context": panel.context(request, customer) if panel and panel.context else {},
        }
    return {
        "customer": customer,
        "identities": list(customer.identities.order_by("kind", "value")),
        "consents": [
            {"channel": value, "label": label, "consent": current.get(value)}
            for value, label in ConsentChannel.choices
        ],
        "consent_changes": list(
            ConsentChange.objects.filter(customer=customer)
            .select_related("changed_by")
            .order_by("-occurred_at", "-id")[:CONSENT_CHANGES_SHOWN]
        ),
        "consent_form": ConsentSetForm(),
        "can_set_consent": not customer.is_erased and model_admin.has_consent_permission(request),
        "tags": tags,
        "tag_choices": tag_choices,
        "can_add_tags": can_edit_tags,
        "can_remove_tags": not customer.is_erased and user.has_perm("crm.delete_customertag"),
        "orders": orders,
        "orders_total": orders_qs.count(),
        "orders_url": reverse("admin:crm_order_changelist") + f"?customer__id__exact={customer.pk}",
        "events": [
            {"event": e, "props": _properties_summary(e.properties)} for e in events[:TIMELINE_PAGE_SIZE]
        ],
        "timeline_page": timeline_page,
        "timeline_has_older": len(events) > TIMELINE_PAGE_SIZE and timeline_page < TIMELINE_MAX_PAGE,
        "events_url": reverse("admin:crm_event_changelist") + f"?customer__id__exact={customer.pk}",
        "merges": list(
            customer.merges_absorbed.select_related("performed_by").order_by("-performed_at")[:RECORDS_SHOWN]
        ),
        "privacy_requests": list(
            customer.privacy_requests.select_related("requested_by").order_by("-created_at")[:RECORDS_SHOWN]
        ),
        "changes": _recent_changes(customer),
        "can_export": model_admin.has_export_permission(request),
        "can_erase": not customer.is_erased and model_admin.has_erase_permission(request),
        "slots": slots,
    }


# --- Forms ----------------------------------------------------------------------------------------


CUSTOMER_PROFILE_FIELDS = ("name", "email", "phone", "birthday", "gender", "city", "region", "time_zone")
CUSTOMER_ACQUISITION_FIELDS = ("acquisition_channel", "utm_source", "utm_medium", "utm_campaign")


class CustomerAdminForm(forms.ModelForm):
    class Meta:
        model = Customer
        fields = (*CUSTOMER_PROFILE_FIELDS, *CUSTOMER_ACQUISITION_FIELDS)

    def clean_email(self):
        email = (self.cleaned_data.get("email") or "").strip().lower()
        self._refuse_identifier_of_another_customer("email", email)
        return email

    def clean_phone(self):
        phone = normalise_phone(self.cleaned_data.get("phone") or "")
        self._refuse_identifier_of_another_customer("phone", phone)
        return phone

    def _refuse_identifier_of_another_customer(self, kind, value):
        if not value:
            return
        try:
            owner = identity_owner_id(kind=kind, value=value)
        except ValidationError:
            return  # the field's own validation reports the malformed value
        if owner is not None and owner != self.instance.pk:
            raise ValidationError(
                gettext("%(value)s already identifies customer #%(owner)s: merge the two customers instead.")
                % {"value": value, "owner": owner}
            )


class ConsentSetForm(forms.Form):
    channel = forms.ChoiceField(label=_("Channel"), choices=ConsentChannel.choices)
    status = forms.ChoiceField(label=_("Decision"), choices=ConsentStatus.choices, widget=forms.RadioSelect)
    source = forms.CharField(
        label=_("Source"),
        max_length=100,
        help_text=_("Where the customer said so, e.g. phone call, store visit, written request."),
    )


class MergeForm(forms.Form):
    survivor = forms.TypedChoiceField(label=_("Keep"), coerce=int, widget=forms.RadioSelect)
    reason = forms.CharField(label=_("Reason"), max_length=300)

    def __init__(self, *args, customers, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["survivor"].choices = [(c.pk, f"#{c.pk} {c}") for c in customers]


class EraseForm(forms.Form):
    reason = forms.CharField(
        label=_("Reason"), max_length=300, help_text=_("E.g. the customer's request reference and date.")
    )
    confirm = forms.BooleanField(label=_("I understand that this cannot be undone."), required=True)


# --- Customer admin -------------------------------------------------------------------------------


@admin.register(Customer)
class CustomerAdmin(LargeTableAdmin, SimpleHistoryAdmin):
    form = CustomerAdminForm
    # Own columns only (no joins); an erased customer shows as "已删除 / Erased" by name.
    list_display = ("id", "name", "email", "phone", "acquisition_channel", "created_at")
    # One link per row: with a search or filter active, every link resolves its URL to carry the filters.
    list_display_links = ("name",)
    list_filter = (
        "acquisition_channel",
        "gender",
        ErasedFilter,
        ("created_at", admin.DateFieldListFilter),
    )
    # Sorting a million rows by a column without an index would be a full sort; offer the indexed ones.
    sortable_by = ("id", "created_at")
    search_fields = ("name",)  # shows the search box; get_search_results does the real work
    search_help_text = _(
        "Name (substring, or the first characters), email (whole or beginning), phone (with or without +86), "
        "any identifier (WeChat openid, buyer id, device id…) exactly, customer id (#123) or external id."
    )
    readonly_fields = ("external_id", "created_at", "updated_at", "erased_at")
    fieldsets = (
        (None, {"fields": CUSTOMER_PROFILE_FIELDS}),
        (_("Acquisition"), {"fields": CUSTOMER_ACQUISITION_FIELDS}),
        (_("Record"), {"fields": ("external_id", "created_at", "updated_at", "erased_at")}),
    )
    actions = ("merge_selected", "export_selected", "erase_selected")

    # Permissions. Customers are never deleted from the admin: erasure (which keeps orders) replaces it.
    def has_delete_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        if obj is not None and obj.is_erased:
            return False
        return super().has_change_permission(request, obj)

    def save_model(self, request, obj, form, change):
        with transaction.atomic():
            super().save_model(request, obj, form, change)
            customer_identities_sync(customer=obj, source="admin")

    def has_merge_permission(self, request):
        return request.user.has_perms(["crm.change_customer", "crm.delete_customer"])

    def has_export_permission(self, request):
        return request.user.has_perms(["crm.view_customer", "crm.add_privacyrequest"])

    def has_erase_permission(self, request):
        return request.user.has_perms(["crm.change_customer", "crm.add_privacyrequest"])

    def has_consent_permission(self, request):
        return request.user.has_perm("crm.change_consent") or request.user.has_perm("crm.add_consent")

    # List and search.
    def get_search_results(self, request, queryset, search_term):
        if not search_term.strip():
            return queryset, False
        return queryset.filter(customer_search_filter(search_term)), False

    # The 360 page is the change view.
    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if obj is not None and not add:
            context["c360"] = customer_360_context(request, obj, model_admin=self)
        return super().render_change_form(
            request, context, add=add, change=change, form_url=form_url, obj=obj
        )

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("<path:object_id>/consent/", view(self.consent_view), name="crm_customer_consent"),
            path("<path:object_id>/tags/", view(self.tags_view), name="crm_customer_tags"),
            path("<path:object_id>/export/", view(self.export_view), name="crm_customer_export"),
            path("<path:object_id>/erase/", view(self.erase_view), name="crm_customer_erase"),
            *super().get_urls(),
        ]

    def _customer_or_404(self, request, object_id) -> Customer:
        customer = self.get_object(request, object_id)
        if customer is None:
            raise Http404(gettext("No customer with id %(id)s.") % {"id": object_id})
        return customer

    def _back_to_360(self, customer, anchor=""):
        return HttpResponseRedirect(reverse("admin:crm_customer_change", args=[customer.pk]) + anchor)

    def consent_view(self, request, object_id):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.has_consent_permission(request):
            raise PermissionDenied
        customer = self._customer_or_404(request, object_id)
        form = ConsentSetForm(request.POST)
        if customer.is_erased:
            messages.error(request, gettext("This customer was erased; consent can no longer be changed."))
        elif form.is_valid():
            consent_set(
                customer=customer,
                channel=form.cleaned_data["channel"],
                status=form.cleaned_data["status"],
                source=form.cleaned_data["source"],
                changed_by=request.user,
            )
            messages.success(
                request,
                gettext("Consent on %(channel)s set to %(status)s.")
                % {
                    "channel": ConsentChannel(form.cleaned_data["channel"]).label,
                    "status": ConsentStatus(form.cleaned_data["status"]).label,
                },
            )
        else:
            messages.error(request, _form_errors_text(form))
        return self._back_to_360(customer, "#consents")

    def tags_view(self, request, object_id):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        customer = self._customer_or_404(request, object_id)
        operation = request.POST.get("op")
        needed = {"add": "crm.add_customertag", "remove": "crm.delete_customertag"}.get(operation)
        if needed is None:
            messages.error(request, gettext("Unknown tag operation."))
            return self._back_to_360(customer, "#tags")
        if not request.user.has_perm(needed):
            raise PermissionDenied
        tag_id = request.POST.get("tag") or ""
        tag = Tag.objects.filter(pk=int(tag_id)).first() if tag_id.isdigit() else None
        if tag is None:
            messages.error(request, gettext("Choose a tag."))
            return self._back_to_360(customer, "#tags")
        try:
            if operation == "add":
                _obj, created = customer_tag_add(customer=customer, tag=tag)
                text = (
                    gettext("Tag %(tag)s added.")
                    if created
                    else gettext("The customer already has tag %(tag)s.")
                )
            else:
                removed = customer_tag_remove(customer=customer, tag=tag)
                text = (
                    gettext("Tag %(tag)s removed.")
                    if removed
                    else gettext("The customer did not have tag %(tag)s.")
                )
            messages.success(request, text % {"tag": tag.name})
        except TagRefused:
            messages.error(request, gettext("This customer was erased; tags can no longer be changed."))
        return self._back_to_360(customer, "#tags")

    def _export_response(self, request, customer) -> HttpResponse:
        data = customer_export_data(customer=customer, requested_by=request.user, via="admin")
        response = HttpResponse(
            json.dumps(data, ensure_ascii=False, indent=2), content_type="application/json; charset=utf-8"
        )
        response["Content-Disposition"] = f'attachment; filename="customer-{customer.pk}-export.json"'
        return response

    def export_view(self, request, object_id):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.has_export_permission(request):
            raise PermissionDenied
        return self._export_response(request, self._customer_or_404(request, object_id))

    def erase_view(self, request, object_id):
        if not self.has_erase_permission(request):
            raise PermissionDenied
        customer = self._customer_or_404(request, object_id)
        if customer.is_erased:
            messages.warning(request, gettext("This customer was already erased."))
            return self._back_to_360(customer)
        form = EraseForm(request.POST if request.method == "POST" else None)
        if request.method == "POST" and form.is_valid():
            self._erase(request, [customer], form.cleaned_data["reason"])
            return self._back_to_360(customer)
        return self._erase_confirmation(request, [customer], form, action_url=request.path)

    def _erase(self, request, customers, reason):
        for customer in customers:
            try:
                customer_erase(customer=customer, requested_by=request.user, via="admin", reason=reason)
                messages.success(request, gettext("Customer #%(id)s erased.") % {"id": customer.pk})
            except PrivacyRefused as refused:
                messages.error(request, str(refused))

    def _erase_confirmation(self, request, customers, form, *, action_url, action_name=None):
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": gettext("Erase customer data"),
            "customers": [(c, customer_erase_preview(customer=c)) for c in customers],
            "form": form,
            "action_url": action_url,
            "action_name": action_name,
            "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, "admin/crm/customer/erase_confirmation.html", context)

    # Actions.
    @admin.action(description=_("Merge into…"), permissions=["merge"])
    def merge_selected(self, request, queryset):
        customers = list(queryset.order_by("pk")[:3])
        if len(customers) != 2:
            messages.error(request, gettext("Select exactly two customers to merge."))
            return None
        if any(c.is_erased for c in customers):
            messages.error(request, gettext("An erased customer cannot be merged."))
            return None
        form = MergeForm(
            request.POST if request.POST.get("post") == "yes" else None,
            customers=customers,
            initial={"survivor": customers[0].pk},
        )
        if request.POST.get("post") == "yes" and form.is_valid():
            survivor = next(c for c in customers if c.pk == form.cleaned_data["survivor"])
            merged = next(c for c in customers if c.pk != survivor.pk)
            try:
                record = customer_merge(
                    survivor=survivor,
                    merged=merged,
                    trigger=CustomerMerge.Trigger.MANUAL,
                    reason=form.cleaned_data["reason"],
                    performed_by=request.user,
                )
            except MergeRefused as refused:
                messages.error(request, str(refused))
                return None
            moved = ", ".join(f"{label}: {count}" for label, count in sorted(record.moved.items())) or "—"
            messages.success(
                request,
                gettext("Customer #%(merged)s merged into #%(survivor)s (moved %(moved)s).")
                % {"merged": record.merged_customer_id, "survivor": survivor.pk, "moved": moved},
            )
            return self._back_to_360(survivor)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": gettext("Merge two customers"),
            "columns": [
                {"customer": c, "sizes": _customer_sizes(c), "radio": radio}
                for c, radio in zip(customers, form["survivor"], strict=True)
            ],
            "size_labels": [
                ("orders", gettext("Orders")),
                ("events", gettext("Behaviour events")),
                ("identities", gettext("Identifiers")),
                ("consents", gettext("Consents")),
                ("tags", gettext("Tags")),
            ],
            "compare_fields": _comparison_rows(customers),
            "form": form,
            "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, "admin/crm/customer/merge_confirmation.html", context)

    @admin.action(description=_("Export data (JSON)"), permissions=["export"])
    def export_selected(self, request, queryset):
        customers = list(queryset[:2])
        if len(customers) != 1:
            messages.error(request, gettext("Select exactly one customer to export."))
            return None
        return self._export_response(request, customers[0])

    @admin.action(description=_("Erase personal data…"), permissions=["erase"])
    def erase_selected(self, request, queryset):
        customers = list(queryset.filter(erased_at__isnull=True)[:21])
        if not customers:
            messages.error(request, gettext("The selected customers are already erased."))
            return None
        if len(customers) > 20:
            messages.error(request, gettext("Erase at most 20 customers at a time."))
            return None
        form = EraseForm(request.POST if request.POST.get("post") == "yes" else None)
        if request.POST.get("post") == "yes" and form.is_valid():
            self._erase(request, customers, form.cleaned_data["reason"])
            return None
        return self._erase_confirmation(request, customers, form, action_url="", action_name="erase_selected")


def _form_errors_text(form) -> str:
    return " ".join(
        f"{form.fields[f].label if f in form.fields else ''}: {' '.join(e)}" for f, e in form.errors.items()
    )


def _customer_sizes(customer: Customer) -> dict:
    # Capped: a bot-like customer with millions of events must not make the confirmation page slow.
    cap = 10_000
    events = Event.objects.filter(customer=customer).order_by()[: cap + 1].count()
    return {
        "orders": Order.objects.filter(customer=customer).count(),
        "events": f"{cap:,}+" if events > cap else events,
        "identities": customer.identities.count(),
        "consents": customer.consents.count(),
        "tags": customer.customer_tags.count(),
    }


def _comparison_rows(customers) -> list[dict]:
    names = (
        "name",
        "email",
        "phone",
        "external_id",
        "birthday",
        "gender",
        "city",
        "acquisition_channel",
        "created_at",
    )
    rows = []
    for name in names:
        values = [
            getattr(c, f"get_{name}_display")() if hasattr(c, f"get_{name}_display") else getattr(c, name)
            for c in customers
        ]
        rows.append(
            {
                "label": _field_label(Customer, name),
                "values": values,
                "differ": len({str(v) for v in values}) > 1,
            }
        )
    return rows


# --- Other CDP models -----------------------------------------------------------------------------


@admin.register(Product)
class ProductAdmin(admin.ModelAdmin):
    list_display = ("sku", "name", "category", "price", "currency", "created_at")
    list_filter = ("category", "currency")
    search_fields = ("sku", "name")
    ordering = ("sku",)
    readonly_fields = ("created_at",)


class OrderLineInline(admin.TabularInline):
    model = OrderLine
    fields = (
        "line_no",
        "sku",
        "name",
        "category",
        "quantity",
        "unit_price",
        "line_total",
        "refunded_quantity",
    )
    readonly_fields = fields
    ordering = ("line_no",)
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class RefundInline(admin.TabularInline):
    model = Refund
    fields = ("external_id", "amount", "refunded_at", "reason", "lines")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(Order)
class OrderAdmin(CustomerColumnsMixin, ReadOnlyAdmin, LargeTableAdmin):
    """Orders arrive by ingestion (API, CSV), idempotent on their external id and fingerprint; editing
    one here would break that, so the admin shows them only."""

    list_display = (
        "external_id",
        "customer_display",
        "channel",
        "store",
        "placed_at",
        "total",
        "currency",
        "status",
    )
    list_filter = ("status", "channel", ("placed_at", admin.DateFieldListFilter))
    search_fields = ("external_id",)
    search_help_text = _("Order id (whole or beginning).")
    # Newest first by primary key: the model's -placed_at has no index of its own, and sorting millions of
    # orders for one page would be a full sort.
    ordering = ("-id",)
    sortable_by = ()
    fields = (
        "external_id",
        "customer_detail",
        "channel",
        "store",
        "placed_at",
        "currency",
        "total",
        "refunded_amount",
        "status",
        "created_at",
    )
    readonly_fields = fields
    inlines = (OrderLineInline, RefundInline)

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if not term:
            return queryset, False
        return queryset.filter(external_id__startswith=term), False


@admin.register(Event)
class EventAdmin(CustomerColumnsMixin, ReadOnlyAdmin, LargeTableAdmin):
    list_display = ("id", "type", "customer_display", "channel", "occurred_at", "received_at")
    list_filter = (EventTypeFilter, "channel")
    sortable_by = ()
    ordering = ("-id",)
    fields = (
        "type",
        "customer_detail",
        "channel",
        "occurred_at",
        "received_at",
        "external_id",
        "properties_display",
    )
    readonly_fields = fields

    @admin.display(description=_("properties"))
    def properties_display(self, obj):
        return _pretty_json(obj.properties)


@admin.register(Tag)
class TagAdmin(admin.ModelAdmin):
    list_display = ("name", "kind", "description", "created_at")
    list_filter = ("kind",)
    search_fields = ("name",)
    readonly_fields = ("created_at",)


@admin.register(CustomerMerge)
class CustomerMergeAdmin(ReadOnlyAdmin, LargeTableAdmin):
    list_display = (
        "performed_at",
        "survivor_display",
        "merged_customer_id",
        "trigger",
        "performed_by",
        "reason",
    )
    list_filter = ("trigger",)
    list_select_related = ("performed_by",)
    fields = (
        "survivor_display",
        "merged_customer_id",
        "trigger",
        "reason",
        "performed_by",
        "performed_at",
        "moved_display",
        "snapshot_display",
    )
    readonly_fields = fields

    @admin.display(description=_("survivor"), ordering="survivor_id")
    def survivor_display(self, obj):
        return customer_link(obj.survivor_id)

    @admin.display(description=_("rows moved"))
    def moved_display(self, obj):
        return _pretty_json(obj.moved)

    @admin.display(description=_("merged customer as it was"))
    def snapshot_display(self, obj):
        return _pretty_json(obj.merged_snapshot)


@admin.register(PrivacyRequest)
class PrivacyRequestAdmin(CustomerColumnsMixin, ReadOnlyAdmin, LargeTableAdmin):
    list_display = ("created_at", "kind", "customer_display", "via", "requested_by", "reason")
    list_filter = ("kind", "via")
    list_select_related = ("requested_by",)
    fields = ("kind", "customer_detail", "via", "requested_by", "reason", "created_at", "summary_display")
    readonly_fields = fields

    @admin.display(description=_("summary"))
    def summary_display(self, obj):
        return _pretty_json(obj.summary)


@admin.register(ConsentChange)
class ConsentChangeAdmin(CustomerColumnsMixin, ReadOnlyAdmin, LargeTableAdmin):
    list_display = (
        "occurred_at",
        "customer_display",
        "channel",
        "previous_status",
        "status",
        "source",
        "changed_by",
    )
    list_filter = ("channel", "status")
    list_select_related = ("changed_by",)
    ordering = ("-id",)  # the history only grows; the primary key serves "newest first" without a sort
    sortable_by = ()
    fields = (
        "customer_detail",
        "channel",
        "previous_status",
        "status",
        "occurred_at",
        "source",
        "changed_by",
        "recorded_at",
    )
    readonly_fields = fields


# --- API keys -------------------------------------------------------------------------------------


class ApiKeyForm(forms.ModelForm):
    scopes = forms.MultipleChoiceField(
        label=_("scopes"), choices=ApiKey.Scope.choices, widget=forms.CheckboxSelectMultiple
    )

    class Meta:
        model = ApiKey
        fields = ("name", "scopes")


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
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


# The rest of crm's admin lives in modules by subject; importing them registers their ModelAdmins.
from crm import admin_imports, admin_metrics, admin_segments  # noqa: E402, F401
