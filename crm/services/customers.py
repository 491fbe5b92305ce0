"""Creating, updating and merging customers by their identifiers."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from django.core.serializers.json import DjangoJSONEncoder
from django.db import IntegrityError, models, transaction
from django.forms.models import model_to_dict
from django.utils import timezone
from django.utils.translation import gettext as _

from crm.models import PROFILE_FIELDS as PROFILE_FIELDS  # what an upsert may set; the API refuses the rest
from crm.models import (
    Consent,
    Customer,
    CustomerIdentity,
    CustomerMerge,
    IdentityKind,
)
from crm.services.bulk_sql import history_copy_rows
from crm.services.identities import normalise_identity

logger = logging.getLogger(__name__)


# Apps to the right of crm that hold rows which cannot simply be re-pointed at the survivor (one loyalty
# account per customer, say) register a handler here at start-up. crm calls it inside the merge
# transaction, before the generic re-pointing, without knowing the app by name (the dependency rule).
MergeHandler = Callable[..., dict]
_merge_handlers: dict[str, MergeHandler] = {}


def merge_handler_register(label: str, handler: MergeHandler) -> None:
    """`handler(*, survivor, merged)` folds its own rows and returns {model label: rows moved}."""
    _merge_handlers[label] = handler


@dataclass
class UpsertResult:
    customer: Customer
    created: bool
    changed_fields: list[str] = field(default_factory=list)
    merged_customer_ids: list[int] = field(default_factory=list)


# What customers_attribute_set may change: the profile without its identifiers (an email or a phone is
# also a CustomerIdentity, kept in step by customer_identities_sync one customer at a time), plus the
# preferred channel.
BULK_SETTABLE_ATTRIBUTES = tuple(
    f for f in (*PROFILE_FIELDS, "preferred_channel") if f not in ("email", "phone")
)


def customers_attribute_set(
    *, customer_ids, attribute: str, value, change_reason: str, now: datetime | None = None
) -> list[int]:
    """Set one profile attribute on many customers, through the audit history as every other change to a
    customer: a "~" history row (with `change_reason`) for each customer whose value changed, none for one that
    already had it. Set-based: the changed rows are locked by id (the one lock order), updated in one
    statement and their history copied in one INSERT ... SELECT. Erased customers are left alone (their
    profile stays empty). Returns the ids of the customers changed; ValueError for an unknown attribute."""
    now = now or timezone.now()
    if attribute not in BULK_SETTABLE_ATTRIBUTES:
        raise ValueError(f"{attribute!r} is not an attribute that can be set on many customers at once")
    ids = sorted(set(customer_ids))
    if not ids:
        return []
    with transaction.atomic():
        changed = list(
            Customer.objects.select_for_update()
            .filter(pk__in=ids, erased_at__isnull=True)
            .exclude(**{attribute: value})
            .order_by("pk")
            .values_list("pk", flat=True)
        )
        if changed:
            Customer.objects.filter(pk__in=changed).update(**{attribute: value, "updated_at": now})
            history_copy_rows(Customer, changed, reason=change_reason, when=now, kind="~")
    return changed


def _identities_of(*, external_id: str | None, profile: dict, identities: list[tuple[str, str]]):
    """All identifiers an input carries, normalised and de-duplicated, in a stable order."""
    found: dict[tuple[str, str], None] = {}
    if external_id:
        found[normalise_identity(IdentityKind.EXTERNAL_ID, external_id)] = None
    if profile.get("email"):
        found[normalise_identity(IdentityKind.EMAIL, profile["email"])] = None
    if profile.get("phone"):
        found[normalise_identity(IdentityKind.PHONE, profile["phone"])] = None
    for kind, value in identities:
        found[normalise_identity(kind, value)] = None
    return list(found)


def _matching_customer_ids(pairs: list[tuple[str, str]]) -> list[int]:
    if not pairs:
        return []
    q = models.Q()
    for kind, value in pairs:
        q |= models.Q(kind=kind, value=value)
    return sorted(set(CustomerIdentity.objects.filter(q).values_list("customer_id", flat=True)))


def customer_upsert(
    *,
    external_id: str | None = None,
    profile: dict | None = None,
    identities: list[tuple[str, str]] | None = None,
    source: str = "api",
    performed_by=None,
) -> UpsertResult:
    """Find the customer these identifiers point at (creating one if none), apply `profile`, attach any new
    identifiers, and merge every other customer the identifiers point at into the oldest one.

    Safe under concurrency: two requests racing to create the same new identifier collide on the
    (kind, value) unique constraint; the loser retries and finds the winner's customer."""
    profile = {k: v for k, v in (profile or {}).items() if k in PROFILE_FIELDS}
    if profile.get("phone"):
        profile["phone"] = normalise_identity(IdentityKind.PHONE, profile["phone"])[1]
    if profile.get("email"):
        profile["email"] = profile["email"].strip().lower()
    pairs = _identities_of(external_id=external_id, profile=profile, identities=identities or [])
    for attempt in range(3):
        try:
            with transaction.atomic():
                return _upsert_locked(
                    external_id=external_id,
                    profile=profile,
                    pairs=pairs,
                    source=source,
                    performed_by=performed_by,
                )
        except IntegrityError:
            if attempt == 2:
                raise
            logger.info("customer_upsert raced on an identifier; retrying", extra={"pairs": pairs})
    raise AssertionError("unreachable")


def _upsert_locked(*, external_id, profile, pairs, source, performed_by) -> UpsertResult:
    matched_ids = _matching_customer_ids(pairs)
    if external_id:
        by_external = Customer.objects.filter(external_id=external_id).values_list("id", flat=True).first()
        if by_external and by_external not in matched_ids:
            matched_ids = sorted({*matched_ids, by_external})
    if not matched_ids:
        customer = Customer(external_id=external_id or None, **profile)
        customer.full_clean(validate_unique=False)
        customer.save()
        CustomerIdentity.objects.bulk_create(
            [CustomerIdentity(customer=customer, kind=k, value=v, source=source) for k, v in pairs]
        )
        return UpsertResult(customer=customer, created=True, changed_fields=list(profile))

    # Lock in primary-key order so two merges touching the same customers cannot deadlock.
    locked = list(Customer.objects.select_for_update().filter(id__in=matched_ids).order_by("id"))
    survivor = locked[0]
    if external_id:
        survivor = next((c for c in locked if c.external_id == external_id), survivor)
    merged_ids = []
    for other in locked:
        if other.pk != survivor.pk:
            merged_ids.append(other.pk)  # before the merge deletes it and clears its pk
            customer_merge(
                survivor=survivor,
                merged=other,
                trigger=CustomerMerge.Trigger.IDENTITY,
                reason=f"shared identifier at {source}",
                performed_by=performed_by,
            )

    changed = []
    if external_id and survivor.external_id != external_id:
        survivor.external_id = external_id
        changed.append("external_id")
    for name, value in profile.items():
        if getattr(survivor, name) != value:
            setattr(survivor, name, value)
            changed.append(name)
    if changed:
        survivor.full_clean(validate_unique=False)
        survivor.save()
    have = set(CustomerIdentity.objects.filter(customer=survivor).values_list("kind", "value"))
    CustomerIdentity.objects.bulk_create(
        [
            CustomerIdentity(customer=survivor, kind=k, value=v, source=source)
            for k, v in pairs
            if (k, v) not in have
        ]
    )
    return UpsertResult(
        customer=survivor, created=False, changed_fields=changed, merged_customer_ids=merged_ids
    )


def _snapshot(customer: Customer) -> dict:
    data = model_to_dict(customer)
    data["id"] = customer.pk
    data["created_at"] = customer.created_at
    data["identities"] = list(customer.identities.values("kind", "value", "source"))
    # Round-trip through the encoder so dates and decimals become JSON the field can store.
    return json.loads(json.dumps(data, cls=DjangoJSONEncoder))


def identity_owner_id(*, kind: str, value: str) -> int | None:
    """The customer an identifier already belongs to, if any (value normalised first)."""
    kind, value = normalise_identity(kind, value)
    return (
        CustomerIdentity.objects.filter(kind=kind, value=value).values_list("customer_id", flat=True).first()
    )


def customer_identities_sync(*, customer: Customer, source: str) -> None:
    """After a profile edit, make the customer findable by the email and phone now on the profile. Earlier
    ones stay as identities: a person keeps being recognised by an address they used before."""
    pairs = _identities_of(external_id=customer.external_id, profile=model_to_dict(customer), identities=[])
    have = set(CustomerIdentity.objects.filter(customer=customer).values_list("kind", "value"))
    CustomerIdentity.objects.bulk_create(
        [
            CustomerIdentity(customer=customer, kind=k, value=v, source=source)
            for k, v in pairs
            if (k, v) not in have
        ]
    )


class MergeRefused(ValueError):
    """The merge cannot be done; the message says why and is fit to show to staff."""


def _unique_field_sets(model) -> list[tuple[str, ...]]:
    sets = [tuple(fields) for fields in model._meta.unique_together]
    sets += [tuple(c.fields) for c in model._meta.total_unique_constraints]
    sets += [(f.name,) for f in model._meta.concrete_fields if f.unique and not f.primary_key]
    return sets


def _drop_rows_the_survivor_already_has(model, fk_name: str, *, survivor: Customer, merged: Customer) -> None:
    """Before re-pointing, delete the merged customer's rows that would break a unique constraint because
    the survivor has the same row already (same tag, same static list). A row that is unique per customer
    alone (one account per customer) cannot be dropped safely: its app must register a merge handler."""
    manager = model._default_manager
    for fields in _unique_field_sets(model):
        if fk_name not in fields:
            continue
        others = [f for f in fields if f != fk_name]
        if not others:
            if (
                manager.filter(**{fk_name: merged}).exists()
                and manager.filter(**{fk_name: survivor}).exists()
            ):
                raise MergeRefused(
                    _("Both customers have a %(model)s and nothing knows how to combine them.")
                    % {"model": model._meta.verbose_name}
                )
            continue
        same_row = manager.filter(**{fk_name: survivor}, **{f: models.OuterRef(f) for f in others})
        manager.filter(**{fk_name: merged}).filter(models.Exists(same_row)).delete()


@transaction.atomic
def customer_merge(
    *,
    survivor: Customer,
    merged: Customer,
    trigger: str = CustomerMerge.Trigger.MANUAL,
    reason: str = "",
    performed_by=None,
    now: datetime | None = None,
) -> CustomerMerge:
    """Fold `merged` into `survivor`: every row that points at `merged` (orders, events, consents, tags,
    identities, and rows of apps further right that crm does not know by name) moves to `survivor`; blank
    profile fields are filled from `merged`; the merge is recorded with a snapshot; `merged` is deleted."""
    if survivor.pk == merged.pk:
        raise MergeRefused(_("A customer cannot be merged into itself."))
    if survivor.is_erased or merged.is_erased:
        raise MergeRefused(_("An erased customer cannot be merged or re-identified."))
    now = now or timezone.now()
    first, second = sorted([survivor, merged], key=lambda c: c.pk)
    # Both rows locked, in key order. Fetched, not counted: Django drops FOR UPDATE from a count(), which
    # left the merge unlocked, so a snapshot or campaign start still open on the merged customer was not
    # waited for and its new rows were left behind by the re-pointing below.
    list(
        Customer.objects.select_for_update()
        .filter(pk__in=[first.pk, second.pk])
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    merged.refresh_from_db()
    snapshot = _snapshot(merged)
    moved: dict[str, int] = {}

    # Consents: the most recent decision per channel wins; history moves whole.
    for consent in Consent.objects.filter(customer=merged):
        mine = Consent.objects.filter(customer=survivor, channel=consent.channel).first()
        if mine is None:
            consent.customer = survivor
            consent.save(update_fields=["customer"])
        elif consent.changed_at > mine.changed_at:
            mine.status, mine.changed_at, mine.source = consent.status, consent.changed_at, consent.source
            mine.save(update_fields=["status", "changed_at", "source"])
            consent.delete()
        else:
            consent.delete()
    for handler in _merge_handlers.values():
        moved.update(handler(survivor=survivor, merged=merged))

    # Every other foreign key to Customer, whatever app it lives in, is re-pointed generically. Hidden
    # relations (related_name="+") count too: skipping them would let the cascade delete those rows.
    for relation in Customer._meta.get_fields(include_hidden=True):
        if not relation.auto_created or relation.concrete or relation.many_to_many:
            continue
        model, fk_name = relation.related_model, relation.field.name
        if model in (Consent, CustomerMerge) or model.__name__.startswith("Historical"):
            continue  # consents are folded above; audit history keeps the id it was written for
        _drop_rows_the_survivor_already_has(model, fk_name, survivor=survivor, merged=merged)
        count = model._default_manager.filter(**{fk_name: merged}).update(**{fk_name: survivor})
        if count:
            moved[model._meta.label] = count
    CustomerMerge.objects.filter(survivor=merged).update(survivor=survivor)

    filled = []
    for name in PROFILE_FIELDS:
        if not getattr(survivor, name) and getattr(merged, name):
            setattr(survivor, name, getattr(merged, name))
            filled.append(name)
    merged_external_id = merged.external_id
    record = CustomerMerge.objects.create(
        survivor=survivor,
        merged_customer_id=merged.pk,
        merged_snapshot=snapshot,
        moved=moved,
        trigger=trigger,
        reason=reason,
        performed_by=performed_by,
        performed_at=now,
    )
    merged.delete()
    if not survivor.external_id and merged_external_id:
        survivor.external_id = merged_external_id
        filled.append("external_id")
    if filled:
        survivor.save()
    logger.info(
        "customers merged", extra={"survivor": survivor.pk, "merged": snapshot["id"], "trigger": trigger}
    )
    return record
