"""Segments: rules over customers compiled to one SQL query, static lists, snapshots and exports.

- `fields`: the registry of condition types (what a rule may say), their operators and validation.
- `compiler`: rule JSON -> one Django queryset of customers (EXISTS / semi-joins, no Python loops).
- `selectors`: counts, samples and export rows.
- `services`: snapshots (INSERT ... SELECT) and static-list uploads.
- `forms`: the admin builder widget and forms.
"""
