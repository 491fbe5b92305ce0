from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from campaigns.services.calendar import calendar_dates_seed
from crm.clock import business_today


class Command(BaseCommand):
    help = (
        "Seed the marketing calendar (holidays from the chinesecalendar package, lunar festivals from the "
        "reviewed table, the shopping dates 520, 618, Double 11 and Double 12) for last year to four "
        "years ahead. Idempotent; dates staff edited in the admin are kept."
    )

    def add_arguments(self, parser):
        parser.add_argument("--from-year", type=int)
        parser.add_argument("--to-year", type=int)

    def handle(self, *args, from_year=None, to_year=None, **options):
        this_year = business_today(timezone.now()).year
        first = from_year if from_year is not None else this_year - 1
        last = to_year if to_year is not None else this_year + 4
        if not (1900 <= first <= last <= 2100):
            raise CommandError(
                f"Years must satisfy 1900 <= from-year <= to-year <= 2100 (got {first}..{last})."
            )
        created, updated = calendar_dates_seed(years=range(first, last + 1))
        self.stdout.write(f"Calendar dates {first}-{last}: {created} created, {updated} corrected")
