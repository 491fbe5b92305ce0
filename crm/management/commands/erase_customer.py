"""`manage.py erase_customer ID --reason "..." [--yes]`: erase one customer's personal data (a PIPL/GDPR
erasure request), keeping orders for accounting. Asks for confirmation unless --yes is given."""

from django.core.management.base import BaseCommand, CommandError

from crm.clock import moment_display
from crm.models import Customer
from crm.services.privacy import PrivacyRefused, customer_erase, customer_erase_preview


class Command(BaseCommand):
    help = "Erase one customer's personal data; orders are kept. Recorded as a privacy request."

    def add_arguments(self, parser):
        parser.add_argument("customer_id", type=int)
        parser.add_argument("--reason", required=True, help="why, e.g. the request's reference and date")
        parser.add_argument("--yes", action="store_true", help="do not ask for confirmation")

    def handle(self, *args, customer_id, reason, yes=False, **options):
        customer = Customer.objects.filter(pk=customer_id).first()
        if customer is None:
            raise CommandError(f"No customer with id {customer_id}.")
        if customer.is_erased:
            raise CommandError(
                f"Customer {customer_id} was already erased at {moment_display(customer.erased_at)}."
            )
        preview = customer_erase_preview(customer=customer)
        self.stderr.write(
            f"Customer {customer_id}: will erase the profile, {preview['identities']} identifiers and "
            f"{preview['tags']} tags, opt out {preview['opted_in_consents']} consents, detach "
            f"{preview['events']} events; will keep {preview['orders']} orders."
        )
        if not yes:
            answer = input("Type 'erase' to go on: ")
            if answer.strip() != "erase":
                raise CommandError("Not confirmed; nothing was changed.")
        try:
            request = customer_erase(customer=customer, requested_by=None, via="command", reason=reason)
        except PrivacyRefused as refused:
            raise CommandError(str(refused))
        self.stdout.write(f"Customer {customer_id} erased (privacy request {request.pk}): {request.summary}")
