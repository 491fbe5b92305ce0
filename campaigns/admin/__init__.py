"""The campaigns admin, one module per subject."""

from campaigns.admin import templates  # noqa: F401
