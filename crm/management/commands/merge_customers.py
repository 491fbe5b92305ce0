"""`manage.py merge_customers SURVIVOR_ID MERGED_ID --reason "..."`: fold one customer into another by
hand (the same as the admin's "Merge into…" action)."""

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from crm.models import Customer, CustomerMerge
from crm.services.customers import MergeRefused, customer_merge


class Command(BaseCommand):
    help = "Merge MERGED_ID into SURVIVOR_ID: its orders, events, consents, tags and identifiers move over."

    def add_arguments(self, parser):
        parser.add_argument("survivor_id", type=int)
        parser.add_argument("merged_id", type=int)
        parser.add_argument("--reason", required=True)

    def handle(self, *args, survivor_id, merged_id, reason, **options):
        if survivor_id == merged_id:
            raise CommandError("A customer cannot be merged into itself.")
        with transaction.atomic():
            found = {c.pk: c for c in Customer.objects.filter(pk__in=[survivor_id, merged_id])}
            for customer_id in (survivor_id, merged_id):
                if customer_id not in found:
                    raise CommandError(f"No customer with id {customer_id}.")
                if found[customer_id].is_erased:
                    raise CommandError(f"Customer {customer_id} was erased and cannot be merged.")
            try:
                record = customer_merge(
                    survivor=found[survivor_id],
                    merged=found[merged_id],
                    trigger=CustomerMerge.Trigger.MANUAL,
                    reason=reason,
                    performed_by=None,
                )
            except MergeRefused as refused:
                raise CommandError(str(refused))
        moved = ", ".join(f"{label}: {count}" for label, count in sorted(record.moved.items())) or "nothing"
        self.stdout.write(
            f"Customer {merged_id} merged into {survivor_id} (merge {record.pk}; moved {moved})."
        )
