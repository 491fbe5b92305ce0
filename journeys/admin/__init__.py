"""The journeys app's admin: the list of journeys (with their versions, read-only, and the publish, pause,
resume and archive actions, each through journeys/services/journeys.py) and the enrollments, read-only.
The canvas that edits a graph is the designer page, not a form here. The win-back programme, its runs,
assignments and report: journeys/admin/winback.py."""

from journeys.admin import customer_360, journeys, winback  # noqa: F401
