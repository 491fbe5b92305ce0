"""The programme's configuration as one immutable snapshot (`RuleSet`) that accrual, tiers, expiry and
the backtest compute with. Loading it is a handful of small queries, done once per batch, never per order.

A backtest builds a RuleSet from a draft (unsaved) rule, tier or settings instead of the database, so the
same code that accrues real points computes what a change would have done."""

from __future__ import annotations

import calendar
import json
import zoneinfo
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal

from django.db import connection, models, transaction

from crm.db import server_binding_cursor
from loyalty.models import EarnRule, ExpiryPolicy, ProgrammeSettings, Promotion, Tier


def programme_get() -> ProgrammeSettings:
    """The programme settings row, created with the defaults the first time it is asked for."""
    programme = ProgrammeSettings.objects.filter(pk=1).first()
    if programme is None:
        with transaction.atomic():
            programme, _created = ProgrammeSettings.objects.get_or_create(pk=1)
    return programme


def add_months(moment: datetime, months: int) -> datetime:
    """`moment` plus whole calendar months, clamped to the end of a shorter month (31 Jan + 1 = 28/29 Feb)."""
    month_index = moment.month - 1 + months
    year, month = moment.year + month_index // 12, month_index % 12 + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)


@dataclass(frozen=True)
class RuleSet:
    programme: ProgrammeSettings
    tiers: tuple[Tier, ...]  # active tiers by rank
    rules: tuple[EarnRule, ...]  # active rules
    promotions: tuple[Promotion, ...]  # active promotions
    _tz: zoneinfo.ZoneInfo = field(default=None, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "_tz", zoneinfo.ZoneInfo(self.programme.time_zone or "UTC"))

    # --- lookups --------------------------------------------------------------------------------

    @property
    def tz(self) -> zoneinfo.ZoneInfo:
        return self._tz

    def local_day(self, moment: datetime):
        return moment.astimezone(self._tz).date()

    def tier_by_id(self, tier_id: int | None) -> Tier | None:
        for tier in self.tiers:
            if tier.pk == tier_id:
                return tier
        return None

    @property
    def entry_tier(self) -> Tier | None:
        return self.tiers[0] if self.tiers else None

    def tier_for_value(self, value) -> Tier | None:
        """The best tier whose threshold `value` reaches (spend or points, as the programme counts)."""
        best = None
        for tier in self.tiers:
            threshold = (
                tier.threshold_spend if self.programme.tier_basis == "spend" else tier.threshold_points
            )
            if value >= threshold:
                best = tier
        return best

    def next_tier(self, tier: Tier | None) -> Tier | None:
        rank = -1 if tier is None else tier.rank
        return next((t for t in self.tiers if t.rank > rank), None)

    def threshold_of(self, tier: Tier):
        return tier.threshold_spend if self.programme.tier_basis == "spend" else tier.threshold_points

    def _in_window(self, rule, moment: datetime) -> bool:
        return (rule.starts_at is None or rule.starts_at <= moment) and (
            rule.ends_at is None or moment < rule.ends_at
        )

    def base_rule(self, moment: datetime, currency: str) -> EarnRule | None:
        """The base rule in force at `moment` for `currency`; the most recently started wins an overlap."""
        candidates = [
            r
            for r in self.rules
            if r.kind == EarnRule.Kind.BASE and r.currency == currency and self._in_window(r, moment)
        ]
        candidates.sort(key=lambda r: (r.starts_at is not None, r.starts_at or moment, r.pk or 0))
        return candidates[-1] if candidates else None

    def product_rule(self, moment: datetime, sku: str, category: str) -> EarnRule | None:
        """The highest product or category multiplier matching a line (multipliers do not stack)."""
        best = None
        for r in self.rules:
            if not self._in_window(r, moment):
                continue
            if (r.kind == EarnRule.Kind.PRODUCT and sku and r.sku == sku) or (
                r.kind == EarnRule.Kind.CATEGORY and category and r.category == category
            ):
                if best is None or r.multiplier > best.multiplier:
                    best = r
        return best

    def promotion(self, moment: datetime, category: str) -> Promotion | None:
        best = None
        for p in self.promotions:
            if p.starts_at <= moment < p.ends_at and (not p.category or p.category == category):
                if best is None or p.multiplier > best.multiplier:
                    best = p
        return best

    def event_rules(self, event: str, moment: datetime) -> list[EarnRule]:
        return [
            r
            for r in self.rules
            if r.kind == EarnRule.Kind.EVENT and r.event == event and self._in_window(r, moment)
        ]

    def rules_for_event_type(self, event_type: str, moment: datetime) -> list[EarnRule]:
        """Bonus rules a behaviour event of `event_type` earns (review, social share, sign-up...)."""
        return [
            r
            for r in self.rules
            if r.kind == EarnRule.Kind.EVENT
            and (r.trigger_event_type or DEFAULT_TRIGGER_EVENT_TYPES.get(r.event)) == event_type
            and self._in_window(r, moment)
        ]

    def bonus_event_types(self) -> set[str]:
        return {
            r.trigger_event_type or DEFAULT_TRIGGER_EVENT_TYPES.get(r.event)
            for r in self.rules
            if r.kind == EarnRule.Kind.EVENT
            and (r.trigger_event_type or DEFAULT_TRIGGER_EVENT_TYPES.get(r.event))
        }

    # --- time -----------------------------------------------------------------------------------

    def available_at(self, earned_at: datetime) -> datetime:
        return earned_at + timedelta(days=self.programme.return_window_days)

    def expires_at(self, earned_at: datetime) -> datetime | None:
        policy = self.programme.expiry_policy
        if policy == ExpiryPolicy.NEVER:
            return None
        if policy == ExpiryPolicy.ROLLING_MONTHS:
            return add_months(earned_at, self.programme.expiry_months)
        # End of the following year, in the programme's time zone: the first instant of the year after.
        local = earned_at.astimezone(self._tz)
        return datetime(local.year + 2, 1, 1, tzinfo=self._tz).astimezone(earned_at.tzinfo)

    def window_start(self, now: datetime) -> datetime:
        return add_months(now, -self.programme.tier_window_months)

    # --- drafts ---------------------------------------------------------------------------------

    def with_draft(self, *, rule=None, tier=None, promotion=None, programme=None) -> RuleSet:
        """This rule set with one object replaced by (or added as) an unsaved draft, for a backtest."""
        rules, tiers, promotions = list(self.rules), list(self.tiers), list(self.promotions)
        if rule is not None:
            rules = [r for r in rules if r.pk is None or r.pk != rule.pk]
            if rule.is_active:
                rules.append(rule)
        if tier is not None:
            tiers = [t for t in tiers if t.pk is None or t.pk != tier.pk]
            if tier.is_active:
                tiers.append(tier)
            tiers.sort(key=lambda t: t.rank)
        if promotion is not None:
            promotions = [p for p in promotions if p.pk is None or p.pk != promotion.pk]
            if promotion.is_active:
                promotions.append(promotion)
        return replace(
            self,
            programme=programme or self.programme,
            rules=tuple(rules),
            tiers=tuple(tiers),
            promotions=tuple(promotions),
        )


# Behaviour-event types that earn each bonus when a rule does not name its own.
DEFAULT_TRIGGER_EVENT_TYPES = {
    "signup": "signup",
    "review": "review_posted",
    "social_share": "social_share",
}


def ruleset_load() -> RuleSet:
    """The programme as it is now. Read fresh every time (accrual records the rates it used, and the audit
    checks them against the rules' history, so a cached copy could not be trusted); on PostgreSQL in one
    round trip, because every accrual batch starts here."""
    if connection.vendor == "postgresql":
        loaded = _ruleset_one_query()
        if loaded is not None:
            return loaded
    return RuleSet(
        programme=programme_get(),
        tiers=tuple(Tier.objects.filter(is_active=True).order_by("rank")),
        rules=tuple(EarnRule.objects.filter(is_active=True).order_by("id")),
        promotions=tuple(Promotion.objects.filter(is_active=True).order_by("id")),
    )


_RULESET_SQL = """
SELECT 'programme', row_to_json(p)::text FROM loyalty_programmesettings p WHERE p.id = 1
UNION ALL SELECT 'tier', row_to_json(t)::text
  FROM (SELECT * FROM loyalty_tier WHERE is_active ORDER BY rank) t
UNION ALL SELECT 'rule', row_to_json(r)::text
  FROM (SELECT * FROM loyalty_earnrule WHERE is_active ORDER BY id) r
UNION ALL SELECT 'promotion', row_to_json(m)::text
  FROM (SELECT * FROM loyalty_promotion WHERE is_active ORDER BY id) m
"""


def _instance(model, data: dict):
    """A model instance from a row_to_json row, each value converted by its field as the ORM would."""
    values = {}
    for f in model._meta.concrete_fields:
        raw = data.get(f.column)
        if raw is not None and isinstance(f, models.DateTimeField):
            raw = datetime.fromisoformat(raw)
        values[f.attname] = f.to_python(raw) if raw is not None else None
    obj = model(**values)
    obj._state.adding = False
    obj._state.db = "default"
    return obj


def _ruleset_one_query() -> RuleSet | None:
    with server_binding_cursor() as cursor:  # prepared after a few runs: planning the UNION is most of it
        cursor.execute(_RULESET_SQL)
        rows = cursor.fetchall()
    found: dict[str, list] = {"programme": [], "tier": [], "rule": [], "promotion": []}
    for kind, text in rows:
        # Decimals parsed as Decimal: a multiplier of 1.1 must not become 1.1000000000000000888.
        found[kind].append(json.loads(text, parse_float=Decimal))
    if not found["programme"]:
        return None  # first use: programme_get() creates the settings row
    return RuleSet(
        programme=_instance(ProgrammeSettings, found["programme"][0]),
        tiers=tuple(_instance(Tier, d) for d in found["tier"]),
        rules=tuple(_instance(EarnRule, d) for d in found["rule"]),
        promotions=tuple(_instance(Promotion, d) for d in found["promotion"]),
    )
