"""Set-based SQL for the bulk writers (order ingest, CSV import, event ingest).

Lists of thousands of keys go to PostgreSQL as one array parameter (`= ANY(%s)`) and rows as COPY: with
psycopg's client-side binding, a query with thousands of %s placeholders spends longer being split and
quoted in Python than running. SQLite (`make run`) gets the plain ORM and multi-row INSERTs.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime

from django.db import connection, transaction


def use_copy() -> bool:
    """Whether the bulk writers take the PostgreSQL path (COPY, arrays) rather than the portable one."""
    return connection.vendor == "postgresql"


def rows_where_in(model, key: str, values: list, fields: list[str]) -> list[tuple]:
    """`SELECT fields FROM model WHERE key IN values`, as tuples."""
    if not values:
        return []
    if not use_copy():
        rows: list[tuple] = []
        for start in range(0, len(values), 20_000):  # under SQLite's parameter limit
            rows.extend(
                model._default_manager.filter(**{f"{key}__in": values[start : start + 20_000]}).values_list(
                    *fields
                )
            )
        return rows
    meta = model._meta
    quote = connection.ops.quote_name
    columns = ", ".join(quote(meta.get_field(f).column) for f in fields)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {columns} FROM {quote(meta.db_table)} WHERE {quote(meta.get_field(key).column)} = ANY(%s)",
            [list(values)],
        )
        return cursor.fetchall()


def _row_values(columns, objs) -> list[tuple]:
    """Column values of unsaved instances as bulk_create would write them (defaults, auto_now)."""
    plan = [
        (c, c.attname, bool(getattr(c, "auto_now", False)), c.get_internal_type() == "JSONField")
        for c in columns
    ]
    out = []
    for obj in objs:
        values = []
        for column, attname, auto_now, is_json in plan:
            value = column.pre_save(obj, True) if auto_now else getattr(obj, attname)
            if is_json and value is not None:
                value = json.dumps(value, ensure_ascii=False)
            values.append(value)
        out.append(tuple(values))
    return out


def staging_copy(
    cursor,
    *,
    staging: str,
    columns: Sequence[str],
    rows: Iterable[Sequence],
    like_table: str = "",
    types: Sequence[str] = (),
) -> None:
    """COPY `rows` into the temporary table `staging` (a quoted name), created on first use in the
    transaction and dropped at its commit, emptied when it is reused. PostgreSQL only; call inside a
    transaction.

    The table takes the shape of `columns` of `like_table`, and the rows travel as COPY text; or, with
    `types` (PostgreSQL type names, one per column), it has those types and the rows travel as binary COPY:
    psycopg then dumps each value by its declared type, with no per-value type lookup and no text escaping
    (see BENCHMARKS.md, outbox enqueue)."""
    quote = connection.ops.quote_name
    column_sql = ", ".join(quote(c) for c in columns)
    if types:
        if len(types) != len(columns):
            raise ValueError("staging_copy: one type per column")
        shape = ", ".join(f"{quote(c)} {t}" for c, t in zip(columns, types, strict=True))
        cursor.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS {staging} ({shape}) ON COMMIT DROP; TRUNCATE {staging}"
        )
        statement = f"COPY {staging} ({column_sql}) FROM STDIN (FORMAT BINARY)"
    else:
        cursor.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS {staging} ON COMMIT DROP AS "
            f"SELECT {column_sql} FROM {quote(like_table)} WITH NO DATA; TRUNCATE {staging}"
        )
        statement = f"COPY {staging} ({column_sql}) FROM STDIN"
    with cursor.cursor.copy(statement) as copy:
        if types:
            copy.set_types(list(types))
        write = copy.write_row
        for row in rows:
            write(row)


def insert_new_rows(model, objs: list, *, conflict: list[str], returning: list[str]) -> list[tuple]:
    """INSERT ... ON CONFLICT DO NOTHING RETURNING for unsaved instances, every concrete column written as
    bulk_create would. Only the rows this statement inserted come back, which tells a race's winner from
    its loser. Rows go in sorted by the conflict key, so two writers lock keys in the same order.
    PostgreSQL: COPY into a temporary table, then INSERT ... SELECT. SQLite (>= 3.35): multi-row VALUES."""
    if not objs:
        return []
    with transaction.atomic(savepoint=False):  # the staging table lives until the end of the transaction
        return _insert_new_rows(model, objs, conflict=conflict, returning=returning)


def _insert_new_rows(model, objs: list, *, conflict: list[str], returning: list[str]) -> list[tuple]:
    meta = model._meta
    quote = connection.ops.quote_name
    columns = [f for f in meta.concrete_fields if not f.primary_key]
    column_sql = ", ".join(quote(c.column) for c in columns)
    conflict_sql = ", ".join(quote(meta.get_field(f).column) for f in conflict)
    returning_sql = ", ".join(quote(meta.get_field(f).column) for f in returning)
    out: list[tuple] = []
    with connection.cursor() as cursor:
        if use_copy():
            staging = quote(f"crm_ingest_{meta.db_table}")
            staging_copy(
                cursor,
                staging=staging,
                columns=[c.column for c in columns],
                rows=_row_values(columns, objs),
                like_table=meta.db_table,
            )
            cursor.execute(
                f"INSERT INTO {quote(meta.db_table)} ({column_sql}) SELECT {column_sql} FROM {staging} "
                f"ORDER BY {conflict_sql} ON CONFLICT ({conflict_sql}) DO NOTHING RETURNING {returning_sql}"
            )
            return cursor.fetchall()
        placeholder = "(" + ", ".join(["%s"] * len(columns)) + ")"
        per_statement = max(1, 30_000 // len(columns))  # SQLite allows 32,766 parameters per statement
        for start in range(0, len(objs), per_statement):
            chunk = objs[start : start + per_statement]
            params = [c.get_db_prep_save(c.pre_save(obj, True), connection) for obj in chunk for c in columns]
            cursor.execute(
                f"INSERT INTO {quote(meta.db_table)} ({column_sql}) VALUES {', '.join([placeholder] * len(chunk))} "
                f"ON CONFLICT ({conflict_sql}) DO NOTHING RETURNING {returning_sql}",
                params,
            )
            out.extend(cursor.fetchall())
    return out


def insert_rows(model, objs: list) -> None:
    """Plain bulk insert for rows that cannot conflict (append-only history): COPY on PostgreSQL."""
    if not objs:
        return
    if not use_copy():
        model._default_manager.bulk_create(objs, batch_size=2000)
        return
    meta = model._meta
    quote = connection.ops.quote_name
    columns = [f for f in meta.concrete_fields if not f.primary_key]
    with connection.cursor() as cursor:
        with cursor.cursor.copy(
            f"COPY {quote(meta.db_table)} ({', '.join(quote(c.column) for c in columns)}) FROM STDIN"
        ) as copy:
            for row in _row_values(columns, objs):
                copy.write_row(row)


def update_rows(model, objs: list, fields: list[str]) -> None:
    """bulk_update without its CASE WHEN per row: on PostgreSQL one UPDATE ... FROM unnest(arrays)."""
    if not objs or not fields:
        return
    if not use_copy():
        model._default_manager.bulk_update(objs, fields, batch_size=1000)
        return
    meta = model._meta
    quote = connection.ops.quote_name
    columns = [meta.get_field(f) for f in fields]
    arrays = [f"%s::{meta.pk.db_type(connection)}[]"] + [f"%s::{c.db_type(connection)}[]" for c in columns]
    names = ["pk", *(f"v{n}" for n in range(len(columns)))]
    assignments = ", ".join(f"{quote(c.column)} = v.v{n}" for n, c in enumerate(columns))
    params = [[obj.pk for obj in objs]] + [[getattr(obj, c.attname) for obj in objs] for c in columns]
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {quote(meta.db_table)} AS t SET {assignments} "
            f"FROM unnest({', '.join(arrays)}) AS v({', '.join(names)}) WHERE t.{quote(meta.pk.column)} = v.pk",
            params,
        )


def history_copy_rows(model, pks: list[int], *, reason: str, when: datetime, kind: str = "+") -> None:
    """Write django-simple-history rows for rows just inserted (or updated: kind "~") in one
    INSERT ... SELECT from the table itself, instead of building a historical instance per row."""
    if not pks:
        return
    history = model.history.model
    meta = model._meta
    quote = connection.ops.quote_name
    targets, sources, params = [], [], []
    for f in history._meta.concrete_fields:
        if f.name == "history_id":
            continue
        targets.append(quote(f.column))
        if f.name == "history_date":
            sources.append("%s")
            params.append(f.get_db_prep_save(when, connection))
        elif f.name == "history_change_reason":
            sources.append("%s")
            params.append(reason[:100])
        elif f.name == "history_type":
            sources.append("%s")
            params.append(kind)
        elif f.name == "history_user":
            sources.append("NULL")
        else:
            sources.append(quote(meta.get_field(f.name).column))
    base = (
        f"INSERT INTO {quote(history._meta.db_table)} ({', '.join(targets)}) "
        f"SELECT {', '.join(sources)} FROM {quote(meta.db_table)} WHERE {quote(meta.pk.column)}"
    )
    with connection.cursor() as cursor:
        if use_copy():
            cursor.execute(f"{base} = ANY(%s)", [*params, list(pks)])
        else:
            for start in range(0, len(pks), 20_000):
                chunk = pks[start : start + 20_000]
                cursor.execute(f"{base} IN ({', '.join(['%s'] * len(chunk))})", [*params, *chunk])
