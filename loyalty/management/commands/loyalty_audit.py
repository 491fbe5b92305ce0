from django.core.management.base import BaseCommand, CommandError
from django.utils.translation import gettext as _

from loyalty.services.audit import CHECKS, ledger_audit


class Command(BaseCommand):
    help = _("Check every invariant of the points ledger; exit non-zero naming each breach.")

    def add_arguments(self, parser):
        parser.add_argument("--max-per-check", type=int, default=1000)

    def handle(self, *args, max_per_check, **options):
        breaches = ledger_audit(max_per_check=max_per_check)
        for breach in breaches:
            self.stderr.write(str(breach))
        if breaches:
            raise CommandError(_("loyalty_audit: %(count)d breach(es) found.") % {"count": len(breaches)})
        self.stdout.write(_("loyalty_audit: all %(count)d checks passed.") % {"count": len(CHECKS)})
