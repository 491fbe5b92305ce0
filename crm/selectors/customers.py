"""Reads that other code, the admin and the API use."""

from django.db.models import QuerySet

from crm.models import Consent, ConsentStatus, Customer, Event


def customer_has_consent(*, customer_id: int, channel: str) -> bool:
    """True only with a current opt-in on that channel; no record means no consent."""
    return Consent.objects.filter(
        customer_id=customer_id,
        channel=channel,
        status=ConsentStatus.OPTED_IN,
        customer__erased_at__isnull=True,
    ).exists()


def customers_with_consent(*, channel: str) -> QuerySet[Customer]:
    return Customer.objects.filter(
        erased_at__isnull=True, consents__channel=channel, consents__status=ConsentStatus.OPTED_IN
    )


def customer_timeline(*, customer_id: int) -> QuerySet[Event]:
    """A customer's behaviour, newest first; paginate it, it can be long."""
    return Event.objects.filter(customer_id=customer_id).order_by("-occurred_at", "-id")
