"""`manage.py export_customer ID [--out FILE]`: everything held on one customer, as JSON (a PIPL/GDPR
access request). Recorded as a PrivacyRequest(kind=export, via=command)."""

import json

from django.core.management.base import BaseCommand, CommandError

from crm.models import Customer
from crm.services.privacy import customer_export_data


class Command(BaseCommand):
    help = "Export everything held on one customer as JSON (to stdout, or to --out FILE)."

    def add_arguments(self, parser):
        parser.add_argument("customer_id", type=int)
        parser.add_argument("--out", help="write the JSON to this file instead of standard output")

    def handle(self, *args, customer_id, out=None, **options):
        customer = Customer.objects.filter(pk=customer_id).first()
        if customer is None:
            raise CommandError(f"No customer with id {customer_id}.")
        data = customer_export_data(customer=customer, requested_by=None, via="command")
        text = json.dumps(data, ensure_ascii=False, indent=2)
        if out:
            with open(out, "w", encoding="utf-8") as handle:
                handle.write(text + "\n")
            self.stderr.write(
                f"Customer {customer_id}: {len(data['orders'])} orders, {len(data['events'])} events "
                f"written to {out} (privacy request {data['privacy_request_id']})."
            )
        else:
            self.stdout.write(text)
