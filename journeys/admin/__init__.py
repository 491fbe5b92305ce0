"""The journeys app's admin: the list of journeys (with their versions, read-only, and the publish, pause,
resume and archive actions, each through journeys/services/journeys.py) and the enrollments, read-only.
The canvas that edits a graph is the designer page, not a form here."""

from journeys.admin import customer_360, journeys  # noqa: F401
