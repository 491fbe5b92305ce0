"""The admin's sidebar, grouped by what a marketer sets out to do rather than by Django app (unfold's
SIDEBAR navigation; config/ knows every app, DESIGN.md §4).

A group lists the models it covers; an entry shows only to a user with the view permission on its model,
and a group with no entry left disappears. The System group (internals kept for the record or for
debugging) shows to administrators only. The campaigns and journeys apps add their entries to their
group's tuple here, one line each, when they land; until then their group shows a labelled placeholder.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib import admin
from django.urls import reverse
from django.utils.text import capfirst
from django.utils.translation import gettext_lazy as _
from django.utils.translation import pgettext_lazy

from crm.roles import ADMINISTRATOR


@dataclass(frozen=True)
class NavEntry:
    model: str  # "app_label.model_name"
    icon: str  # a Material Symbols name (unfold ships the font)
    title: str | None = None  # the model's verbose_name_plural when None


CUSTOMERS = (
    NavEntry("crm.customer", "group"),
    NavEntry("crm.segment", "filter_alt"),
    NavEntry("crm.staticlist", "list_alt"),
    NavEntry("crm.tag", "sell"),
    NavEntry("crm.importjob", "upload_file"),
    NavEntry("crm.order", "receipt_long"),
    NavEntry("crm.event", "timeline"),
    NavEntry("crm.product", "inventory_2"),
    NavEntry("crm.consentchange", "verified_user"),
    NavEntry("crm.privacyrequest", "shield_person"),
    NavEntry("crm.customermerge", "merge"),
)
ANALYTICS = (
    NavEntry("crm.dashboardsummary", "monitoring"),
    NavEntry("crm.lifecyclesettings", "tune"),
    NavEntry("crm.metricsrun", "model_training"),
    NavEntry("crm.customermetrics", "analytics"),
    NavEntry("crm.segmentsnapshot", "photo_camera"),
    NavEntry("crm.productaffinity", "hub"),
    NavEntry("crm.acquisitioncost", "payments"),
)
LOYALTY = (
    NavEntry("loyalty.tier", "military_tech"),
    NavEntry("loyalty.loyaltyaccount", "card_membership"),
    NavEntry("loyalty.reward", "redeem"),
    NavEntry("loyalty.couponprogramme", "confirmation_number"),
    NavEntry("loyalty.coupon", "local_activity"),
    NavEntry("loyalty.earnrule", "rule"),
    NavEntry("loyalty.promotion", "campaign"),
    NavEntry("loyalty.ledgerentry", "account_balance_wallet"),
    NavEntry("loyalty.manualadjustment", "edit_note"),
    NavEntry("loyalty.bulkadjustmentbatch", "playlist_add_check"),
    NavEntry("loyalty.rewardredemption", "shopping_bag"),
    NavEntry("loyalty.couponredemption", "point_of_sale"),
    NavEntry("loyalty.referral", "share"),
    NavEntry("loyalty.tierchange", "trending_up"),
    NavEntry("loyalty.memberlogin", "badge"),
)
CAMPAIGNS: tuple[NavEntry, ...] = (
    NavEntry("campaigns.campaign", "campaign"),
    NavEntry("campaigns.campaignrunreport", "query_stats"),
    NavEntry("campaigns.message", "mail"),
    NavEntry("campaigns.deliveryoverview", "monitoring"),
    NavEntry("campaigns.deadletter", "report"),
    NavEntry("campaigns.messagetemplate", "article"),
    NavEntry("campaigns.frequencycap", "speed"),
    NavEntry("campaigns.deliverysettings", "bedtime"),
    NavEntry("campaigns.suppression", "block"),
    NavEntry("campaigns.calendardate", "calendar_month"),
)
JOURNEYS: tuple[NavEntry, ...] = (
    NavEntry("journeys.journey", "route"),
    NavEntry("journeys.enrollment", "directions_walk"),
    NavEntry("journeys.winbackprogramme", "bedtime_off"),
    NavEntry("journeys.winbackrun", "history"),
    NavEntry("journeys.winbackassignment", "assignment_ind"),
)
SETTINGS = (
    NavEntry("loyalty.programmesettings", "settings"),
    NavEntry("crm.apikey", "key"),
    NavEntry("auth.user", "person"),
    NavEntry("auth.group", "admin_panel_settings"),
    NavEntry("django_celery_beat.periodictask", "schedule"),
)
SYSTEM = (
    NavEntry("crm.eventlogcursor", "bookmark"),
    NavEntry("crm.staticlistmember", "person_add"),
    NavEntry("loyalty.owedpoints", "money_off"),
    NavEntry("loyalty.pointlot", "inventory"),
    NavEntry("loyalty.couponbatch", "stacks"),
    NavEntry("loyalty.referralcode", "qr_code"),
    NavEntry("loyalty.memberapitoken", "token"),
    NavEntry("campaigns.providerstate", "cell_tower"),
    NavEntry("django_celery_beat.crontabschedule", "calendar_month"),
    NavEntry("django_celery_beat.intervalschedule", "timer"),
    NavEntry("django_celery_beat.clockedschedule", "alarm"),
    NavEntry("django_celery_beat.solarschedule", "wb_twilight"),
    NavEntry("axes.accessattempt", "lock_clock"),
    NavEntry("axes.accesslog", "login"),
    NavEntry("axes.accessfailurelog", "no_accounts"),
)

# (title, entries, (home page slot, placeholder) shown while the group has no entries, administrators only)
GROUPS = (
    (pgettext_lazy("admin navigation", "Customers"), CUSTOMERS, None, False),
    (pgettext_lazy("admin navigation", "Analytics"), ANALYTICS, None, False),
    (pgettext_lazy("admin navigation", "Loyalty"), LOYALTY, None, False),
    (
        pgettext_lazy("admin navigation", "Campaigns"),
        CAMPAIGNS,
        ("campaigns", _("Arrives with the campaigns app")),
        False,
    ),
    (
        pgettext_lazy("admin navigation", "Journeys"),
        JOURNEYS,
        ("journeys", _("Arrives with the journeys app")),
        False,
    ),
    (pgettext_lazy("admin navigation", "Settings"), SETTINGS, None, False),
    (pgettext_lazy("admin navigation", "System"), SYSTEM, None, True),
)


def is_administrator(user) -> bool:
    """A superuser or a member of the administrator role (crm.roles)."""
    if not user.is_active or not user.is_staff:
        return False
    return user.is_superuser or user.groups.filter(name=ADMINISTRATOR).exists()


def _model_entry(request, entry: NavEntry) -> dict | None:
    app_label, model_name = entry.model.split(".")
    registered = {m._meta.label_lower: m for m in admin.site._registry}
    model = registered.get(entry.model)
    if model is None or not request.user.has_perm(f"{app_label}.view_{model_name}"):
        return None
    return {
        "title": entry.title or capfirst(model._meta.verbose_name_plural),
        "icon": entry.icon,
        "link": reverse(f"admin:{app_label}_{model_name}_changelist"),
    }


def sidebar_navigation(request) -> list[dict]:
    """unfold's SIDEBAR["navigation"]: the groups this user may see, each with the entries they may open."""
    administrator = is_administrator(request.user)
    home = {"title": _("Home"), "icon": "space_dashboard", "link": reverse("admin:index")}
    groups = [{"title": None, "items": [home]}]
    for title, entries, placeholder, administrators_only in GROUPS:
        if administrators_only and not administrator:
            continue
        items = [item for item in (_model_entry(request, entry) for entry in entries) if item]
        if not entries and placeholder:
            # The group's place, labelled, until its app lands; it leads to the home page's slot for it.
            items = [
                {
                    "title": placeholder[1],
                    "icon": "hourglass_empty",
                    "link": reverse("admin:index") + f"#slot-{placeholder[0]}",
                    "active": False,
                }
            ]
        if items:
            # Collapsible: a group opens by a click, and by itself when it holds the page being shown.
            groups.append({"title": title, "collapsible": True, "items": items})
    return groups


def show_all_applications(request) -> bool:
    """unfold's "All applications" list (every registered model by app) is for administrators."""
    return is_administrator(request.user)
