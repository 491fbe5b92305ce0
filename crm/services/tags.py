"""Putting tags on customers and taking them off by hand (rule-applied tags are written by the rules)."""

from collections.abc import Iterable

from django.db import transaction
from django.utils import timezone
from simple_history.utils import bulk_create_with_history

from crm.models import Customer, CustomerTag, Tag


class TagRefused(ValueError):
    """The tag cannot be changed on this customer (erased)."""


@transaction.atomic
def customer_tag_add(*, customer: Customer, tag: Tag, source: str = "manual") -> tuple[CustomerTag, bool]:
    """Tag `customer`; a repeat changes nothing. Returns (customer tag, created)."""
    if customer.is_erased:
        raise TagRefused("cannot tag an erased customer")
    Tag.objects.select_for_update().filter(pk=tag.pk).first()  # queues behind a bulk add of this tag
    return CustomerTag.objects.get_or_create(customer=customer, tag=tag, defaults={"source": source})


@transaction.atomic
def customer_tag_remove(*, customer: Customer, tag: Tag) -> bool:
    """Untag `customer` (the audit history records the removal and who did it). Returns whether the tag
    was there."""
    deleted, _by_model = CustomerTag.objects.filter(customer=customer, tag=tag).delete()
    return deleted > 0


# PostgreSQL takes at most 65,535 parameters per statement; a batch of ids stays well under it.
TAG_BATCH = 5_000


@transaction.atomic
def customers_tag_add(
    *, customer_ids: Iterable[int], tag: Tag, source: str = "manual", user=None
) -> tuple[int, int]:
    """Tag many customers at once (the customer list's bulk action): set-based, in batches, with the audit
    history written in bulk too. Erased customers are skipped. Returns (tagged now, already tagged)."""
    Tag.objects.select_for_update().filter(pk=tag.pk).first()  # one bulk writer per tag at a time
    wanted = sorted(set(customer_ids))
    added = already = 0
    now = timezone.now()
    for start in range(0, len(wanted), TAG_BATCH):
        batch = wanted[start : start + TAG_BATCH]
        ids = set(Customer.objects.filter(pk__in=batch, erased_at__isnull=True).values_list("pk", flat=True))
        existing = set(
            CustomerTag.objects.filter(tag=tag, customer_id__in=ids).values_list("customer_id", flat=True)
        )
        new = sorted(ids - existing)
        if new:
            bulk_create_with_history(
                [CustomerTag(customer_id=pk, tag=tag, source=source, added_at=now) for pk in new],
                CustomerTag,
                batch_size=TAG_BATCH,
                default_user=user,
            )
        added += len(new)
        already += len(existing)
    return added, already


@transaction.atomic
def customers_tag_remove(*, customer_ids: Iterable[int], tag: Tag) -> int:
    """Untag many customers at once, set-based per batch (the audit history records each removal).
    Returns how many carried the tag."""
    wanted = sorted(set(customer_ids))
    removed = 0
    for start in range(0, len(wanted), TAG_BATCH):
        deleted, _by_model = CustomerTag.objects.filter(
            tag=tag, customer_id__in=wanted[start : start + TAG_BATCH]
        ).delete()
        removed += deleted
    return removed
