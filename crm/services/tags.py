"""Putting tags on customers and taking them off by hand (rule-applied tags are written by the rules)."""

from django.db import transaction

from crm.models import Customer, CustomerTag, Tag


class TagRefused(ValueError):
    """The tag cannot be changed on this customer (erased)."""


@transaction.atomic
def customer_tag_add(*, customer: Customer, tag: Tag, source: str = "manual") -> tuple[CustomerTag, bool]:
    """Tag `customer`; a repeat changes nothing. Returns (customer tag, created)."""
    if customer.is_erased:
        raise TagRefused("cannot tag an erased customer")
    return CustomerTag.objects.get_or_create(customer=customer, tag=tag, defaults={"source": source})


@transaction.atomic
def customer_tag_remove(*, customer: Customer, tag: Tag) -> bool:
    """Untag `customer` (the audit history records the removal and who did it). Returns whether the tag
    was there."""
    deleted, _by_model = CustomerTag.objects.filter(customer=customer, tag=tag).delete()
    return deleted > 0
