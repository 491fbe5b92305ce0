"""Admin paginators that never count a million rows to draw a page.

`SELECT count(*)` over the whole customer (or event) table is a full scan that costs more than the page
it paginates. The unfiltered list is numbered from PostgreSQL's own size estimate. A filtered or searched
list fetches the ids of its first `count_cap + 1` matches once, in the list's order: their number is the
count (shown as "more than N" when it reaches the cap) and a page is read back by those ids, so the
search runs once per request instead of once for the count and again for the page.
"""

from django.core.paginator import Paginator
from django.db import connections
from django.utils.functional import cached_property

# Below this many rows an exact count is cheap and an estimate would only confuse.
EXACT_COUNT_BELOW = 20_000
# A filtered list is counted, and can be paged, up to this many rows (100 pages of 50).
FILTERED_COUNT_CAP = 5_000


def table_row_estimate(model, using: str = "default") -> int | None:
    """The planner's row estimate for the model's table, scaled to its current size on disk the way the
    planner itself does it (reltuples is only refreshed by VACUUM/ANALYZE). None when unknown."""
    connection = connections[using]
    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT CASE
                WHEN c.reltuples < 0 THEN NULL
                WHEN c.relpages = 0 THEN c.reltuples::bigint
                ELSE (c.reltuples / c.relpages
                      * (pg_relation_size(c.oid) / current_setting('block_size')::int))::bigint
            END
            FROM pg_class c WHERE c.oid = to_regclass(%s)
            """,
            [connection.ops.quote_name(model._meta.db_table)],
        )
        row = cursor.fetchone()
    return row[0] if row else None


class EstimatedCountPaginator(Paginator):
    """Counts the unfiltered list from the table estimate and a filtered list up to `count_cap` rows.

    `is_estimate` and `is_capped` tell the template to say "about" or "more than" next to the number."""

    exact_count_below = EXACT_COUNT_BELOW
    count_cap = FILTERED_COUNT_CAP

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.is_estimate = False
        self.is_capped = False

    def _is_filtered(self) -> bool:
        query = self.object_list.query
        return bool(query.where) or bool(query.distinct)

    @cached_property
    def _matching_ids(self) -> list:
        """The pks of the first count_cap + 1 matches, in the list's order."""
        return list(self.object_list.values_list("pk", flat=True)[: self.count_cap + 1])

    @cached_property
    def count(self) -> int:
        queryset = self.object_list
        if not hasattr(queryset, "query"):
            return len(queryset)
        if not self._is_filtered():
            estimate = table_row_estimate(queryset.model, using=queryset.db)
            if estimate is not None and estimate >= self.exact_count_below:
                self.is_estimate = True
                return estimate
            return queryset.count()
        matches = len(self._matching_ids)
        if matches > self.count_cap:
            self.is_capped = True
            return self.count_cap
        return matches

    def page(self, number):
        if not hasattr(self.object_list, "query") or not self._is_filtered():
            return super().page(number)
        number = self.validate_number(number)
        bottom = (number - 1) * self.per_page
        ids = self._matching_ids[bottom : min(bottom + self.per_page, self.count)]
        # Read the page by primary key alone (not the search again) and put it back in the list's order.
        source = self.object_list
        rows = source.model._default_manager.all()
        rows.query.select_related = source.query.select_related
        by_pk = {row.pk: row for row in rows.filter(pk__in=ids)}
        return self._get_page([by_pk[pk] for pk in ids if pk in by_pk], number, self)
