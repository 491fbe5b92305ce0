"""Journeys and their versions: create, save the draft's graph, publish, pause, resume, archive, and a new
draft from the published version.

Every write locks the journey row first (then its versions), so two staff publishing, or one saving while
another publishes, are put in order; the partial unique constraints on JourneyVersion (one draft, one
published) are the last line if anything else slips. A published version is frozen: only a draft is
ever saved, and publishing validates the graph again whatever the draft's last save said.
"""

from __future__ import annotations

import copy
from datetime import datetime

from django.db import transaction
from django.db.models import Max
from django.utils import timezone
from django.utils.translation import gettext as _

from journeys.models import (
    LIVE_STATES,
    Enrollment,
    EnrollmentState,
    InFlight,
    Journey,
    JourneyStatus,
    JourneyVersion,
    MigrationStatus,
    VersionMigration,
    VersionStatus,
)
from journeys.nodes import (
    DEFAULT_SETTINGS,
    GraphInvalid,
    GraphProblem,
    default_graph,
    graph_document_problems,
    graph_validate,
    settings_problems,
)
from journeys.services.versions import MappingInvalid, version_mapping_normalised, version_mapping_problems


class JourneyRefused(ValueError):
    """A change the journey's state does not allow (publishing an archived journey, saving a stale copy);
    `code` says which, the message says it to staff."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def _locked(journey: Journey) -> Journey:
    return Journey.objects.select_for_update().get(pk=journey.pk)


def journey_create(
    *,
    name: str,
    description: str = "",
    graph: dict | None = None,
    settings: dict | None = None,
    created_by=None,
    now: datetime | None = None,
) -> Journey:
    """A new journey in draft, with version 1 holding `graph` (or an entry straight to an exit)."""
    now = now or timezone.now()
    name = (name or "").strip()
    if not name:
        raise JourneyRefused("name", _("A journey needs a name."))
    graph = copy.deepcopy(graph) if graph is not None else default_graph()
    journey_settings = copy.deepcopy(settings) if settings is not None else copy.deepcopy(DEFAULT_SETTINGS)
    problems = graph_document_problems(graph) + settings_problems(journey_settings)
    if problems:
        raise GraphInvalid(problems)
    with transaction.atomic():
        journey = Journey.objects.create(
            name=name[:200], description=description, created_by=created_by, created_at=now
        )
        JourneyVersion.objects.create(
            journey=journey,
            number=1,
            graph=graph,
            settings=journey_settings,
            created_by=created_by,
            created_at=now,
            updated_at=now,
        )
    return journey


def journey_draft(journey: Journey) -> JourneyVersion | None:
    return JourneyVersion.objects.filter(journey=journey, status=VersionStatus.DRAFT).first()


def journey_graph_save(
    *,
    journey: Journey,
    graph: dict,
    settings: dict | None = None,
    base_revision: int | None = None,
    allow_problems: bool = False,
    saved_by=None,
    now: datetime | None = None,
) -> tuple[JourneyVersion, list[GraphProblem]]:
    """Save `graph` (and `settings`, when given) to the journey's draft; returns (draft, problems).

    A graph with any problem is refused (GraphInvalid) unless `allow_problems`: then a work in progress
    (an exit not yet connected, a template not yet chosen) is kept with its problems returned, but an
    unreadable document still is not. `base_revision` is the draft revision the caller edited: if
    someone saved since, the save is refused rather than overwriting their work."""
    now = now or timezone.now()
    with transaction.atomic():
        _locked(journey)
        draft = (
            JourneyVersion.objects.select_for_update()
            .filter(journey=journey, status=VersionStatus.DRAFT)
            .first()
        )
        if draft is None:
            raise JourneyRefused(
                "no_draft", _("This journey has no draft: make one from the published version to edit it.")
            )
        if base_revision is not None and base_revision != draft.revision:
            raise JourneyRefused(
                "stale",
                _("Someone saved this journey since you opened it: reload it to see their changes."),
            )
        journey_settings = settings if settings is not None else draft.settings
        problems = graph_validate(graph, settings=journey_settings)
        blocking = graph_document_problems(graph) + settings_problems(journey_settings)
        if blocking or (problems and not allow_problems):
            raise GraphInvalid(blocking or problems)
        draft.graph = copy.deepcopy(graph)
        draft.settings = copy.deepcopy(journey_settings)
        draft.revision += 1
        draft.updated_at = now
        draft.save(update_fields=["graph", "settings", "revision", "updated_at"])
    return draft, problems


def journey_publish(
    *,
    journey: Journey,
    published_by=None,
    now: datetime | None = None,
    in_flight: str = InFlight.STAY,
    mapping: dict | None = None,
    version_number: int | None = None,
) -> JourneyVersion:
    """Publish the draft: validate it again, retire the version published before, and make the draft the
    version customers enter.

    The customers in flight on the retired version stay on it until they finish (`in_flight="stay"`),
    or are moved node by node as `mapping` says (`"move"`, journeys/services/versions.py): the mapping
    is checked here, stored with the publish (VersionMigration) and applied by `version_migration_run`
    after this commits (the caller runs it, the beat task finishes what a dispatcher held).

    `version_number` names the draft the caller means: a publish retried after it went through (a
    double submit, a timeout) finds that version published with the same choices and returns it; the
    same version with other choices, or another draft, is refused."""
    now = now or timezone.now()
    if in_flight not in InFlight.values:
        raise JourneyRefused("in_flight", _("Choose what happens to the customers in flight."))
    if in_flight == InFlight.MOVE:
        mapping = version_mapping_normalised(mapping if mapping is not None else {})
    else:
        mapping = {}
    with transaction.atomic():
        journey = _locked(journey)
        if journey.status == JourneyStatus.ARCHIVED:
            raise JourneyRefused("archived", _("An archived journey cannot be published."))
        draft = (
            JourneyVersion.objects.select_for_update()
            .filter(journey=journey, status=VersionStatus.DRAFT)
            .first()
        )
        if version_number is not None and (draft is None or draft.number != version_number):
            return _publish_replayed(journey, version_number, in_flight, mapping)
        if draft is None:
            raise JourneyRefused("no_draft", _("There is no draft to publish."))
        problems = graph_validate(draft.graph, settings=draft.settings)
        if problems:
            raise GraphInvalid(problems)
        previous = (
            JourneyVersion.objects.select_for_update()
            .filter(journey=journey, status=VersionStatus.PUBLISHED)
            .first()
        )
        if VersionMigration.objects.filter(journey=journey, status=MigrationStatus.RUNNING).exists():
            # Its stragglers (enrollments a dispatcher held) would land on a version retired meanwhile.
            raise JourneyRefused(
                "moving",
                _("The customers of the last publish are still being moved: publish again in a minute."),
            )
        if previous is not None and in_flight == InFlight.MOVE:
            mapping_problems = version_mapping_problems(old=previous, new=draft, mapping=mapping)
            if mapping_problems:
                raise MappingInvalid(mapping_problems)
        if previous is not None:
            previous.status = VersionStatus.RETIRED
            previous.save(update_fields=["status"])
            VersionMigration.objects.create(
                journey=journey,
                from_version=previous,
                to_version=draft,
                mode=in_flight,
                mapping=mapping,
                status=MigrationStatus.RUNNING if in_flight == InFlight.MOVE else MigrationStatus.DONE,
                created_by=published_by,
                created_at=now,
                finished_at=None if in_flight == InFlight.MOVE else now,
            )
        draft.status = VersionStatus.PUBLISHED
        draft.published_at = now
        draft.published_by = published_by
        draft.save(update_fields=["status", "published_at", "published_by"])
        journey.current_version = draft
        journey.status = JourneyStatus.PUBLISHED
        journey.save(update_fields=["current_version", "status", "updated_at"])
    return draft


def _publish_replayed(journey: Journey, number: int, in_flight: str, mapping: dict) -> JourneyVersion:
    """A publish of version `number` that is no longer the draft: the first result if it was published
    with these choices, else a refusal saying why."""
    version = JourneyVersion.objects.filter(journey=journey, number=number).first()
    if version is None or version.status == VersionStatus.DRAFT:
        raise JourneyRefused(
            "stale",
            _("Version %(number)s is not this journey's draft: reload the page.") % {"number": number},
        )
    migration = VersionMigration.objects.filter(to_version=version).first()
    # A first version replaced nothing: any choice about customers in flight was moot.
    same = migration is None or (migration.mode == in_flight and (migration.mapping or {}) == mapping)
    if not same:
        raise JourneyRefused(
            "published_differently",
            _("Version %(number)s was already published, with other choices for the customers in flight.")
            % {"number": number},
        )
    return version


def journey_pause(*, journey: Journey) -> Journey:
    """Stop entries and advancement; customers in flight wait where they are until it is resumed."""
    return _status_move(journey, from_statuses=(JourneyStatus.PUBLISHED,), to=JourneyStatus.PAUSED)


def journey_resume(*, journey: Journey) -> Journey:
    return _status_move(journey, from_statuses=(JourneyStatus.PAUSED,), to=JourneyStatus.PUBLISHED)


def journey_archive(*, journey: Journey, now: datetime | None = None) -> Journey:
    """End the journey for good: customers in flight exit (reason "archived"), nobody enters again."""
    now = now or timezone.now()
    with transaction.atomic():
        journey = _status_move(
            journey,
            from_statuses=(JourneyStatus.DRAFT, JourneyStatus.PUBLISHED, JourneyStatus.PAUSED),
            to=JourneyStatus.ARCHIVED,
        )
        Enrollment.objects.filter(journey=journey, state__in=LIVE_STATES).update(
            state=EnrollmentState.EXITED,
            finished_at=now,
            due_at=None,
            waiting_for="",
            reason="archived",
            claim_token=None,
            claimed_until=None,
        )
    return journey


_MOVE_REFUSALS = {
    JourneyStatus.PAUSED: lambda: _("Only a published journey can be paused."),
    JourneyStatus.PUBLISHED: lambda: _("Only a paused journey can be resumed."),
    JourneyStatus.ARCHIVED: lambda: _("This journey is already archived."),
}


def _status_move(journey: Journey, *, from_statuses: tuple, to: str) -> Journey:
    with transaction.atomic():
        locked = _locked(journey)
        if locked.status not in from_statuses:
            raise JourneyRefused("status", _MOVE_REFUSALS[to]())
        locked.status = to
        locked.save(update_fields=["status", "updated_at"])
    journey.status = locked.status
    return locked


def journey_draft_create(*, journey: Journey, created_by=None, now: datetime | None = None) -> JourneyVersion:
    """A new draft copied from the published version (or the draft there is already: opening a published
    journey twice for editing gives the same draft, not two)."""
    now = now or timezone.now()
    with transaction.atomic():
        journey = _locked(journey)
        if journey.status == JourneyStatus.ARCHIVED:
            raise JourneyRefused("archived", _("An archived journey cannot be edited."))
        existing = JourneyVersion.objects.filter(journey=journey, status=VersionStatus.DRAFT).first()
        if existing is not None:
            return existing
        source = journey.current_version
        if source is None:
            raise JourneyRefused("no_version", _("This journey has no published version to copy."))
        number = (JourneyVersion.objects.filter(journey=journey).aggregate(n=Max("number"))["n"] or 0) + 1
        return JourneyVersion.objects.create(
            journey=journey,
            number=number,
            graph=copy.deepcopy(source.graph),
            settings=copy.deepcopy(source.settings),
            created_by=created_by,
            created_at=now,
            updated_at=now,
        )
