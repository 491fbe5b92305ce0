"""Customers in flight when a new version is published: they stay on their version (nothing to do: a
retired version keeps running for the enrollments on it), or staff move them node by node.

A move is a mapping {old node id: new node id, or "" for "these customers exit"} over every node of the
old version, checked by `version_mapping_problems` before the publish commits and stored with it
(VersionMigration). `version_migration_run` then moves the enrollments in batches, one transaction each:

- it takes only what the engine would let it take: live rows of the old version that no dispatcher
  holds (no claim token, or a claim whose lease has lapsed: its worker is gone, and clearing the token
  makes a late write of that worker find nothing, as a take-over by another dispatcher does), locked
  `FOR UPDATE SKIP LOCKED`, so a row being claimed or advanced right now is skipped, never waited for
  and never moved under a batch that holds it. A skipped row is moved by a later pass (the beat task
  `journeys.tasks.version_migrations_continue`), and the migration stays `running` until none is left;
- it is set-based: per old node of the batch, one UPDATE of the enrollments and one of their open steps,
  and one insert of the steps that record the move;
- it is idempotent: a moved enrollment is on the new version and an exited one is no longer live, so a
  retried or repeated pass never finds them again; a batch that fails rolls back whole.

Each moved or exited enrollment's history says what happened at its old node: a step with outcome
`moved` (or `exited`) whose detail names the version and node it went to. An enrollment waiting at a
wait mapped to a wait of the same kind (a duration or time-of-day wait to a wait; a wait-for-event to
one waiting for the same event) keeps its wake-up time and goes on waiting at the new node, with a new
open step there; any other enrollment enters its new node afresh, due at once. A wait mapped to a node
that is not a wait is allowed: those customers leave the wait early and meet that node at the next
dispatch (the publish page says so). No node but the old entry may be mapped to the new entry:
customers in flight do not start the journey again.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

from django.db import transaction
from django.db.models import Count, F, Q
from django.utils import timezone
from django.utils.translation import gettext as _

from crm.services.bulk_sql import insert_rows
from journeys.models import (
    LIVE_STATES,
    Enrollment,
    EnrollmentState,
    EnrollmentStep,
    InFlight,
    JourneyVersion,
    MigrationStatus,
    StepOutcome,
    VersionMigration,
)
from journeys.nodes import graph_entry, graph_nodes

DEFAULT_MIGRATION_BATCH = 2_000
EXIT = ""  # the mapping's value for "these customers exit"


class MappingInvalid(ValueError):
    """A node mapping that cannot be applied; `problems` name each node at fault."""

    code = "mapping"

    def __init__(self, problems: list[str]):
        self.problems = problems
        self.message = _("The customers in flight cannot be moved: %(problems)s") % {
            "problems": " ".join(problems)
        }
        super().__init__(self.message)


def version_mapping_prefill(*, old: JourneyVersion, new: JourneyVersion) -> dict[str, str]:
    """Every node of `old` to the node of `new` with the same id, else to nothing (exit)."""
    new_nodes = graph_nodes(new.graph)
    return {node_id: (node_id if node_id in new_nodes else EXIT) for node_id in graph_nodes(old.graph)}


def version_mapping_normalised(mapping) -> dict[str, str]:
    """The mapping as {str: str} (None for a value means exit); ValueError if it is not an object."""
    if not isinstance(mapping, dict):
        raise MappingInvalid([_("The node mapping must be an object of old node to new node.")])
    return {str(k): ("" if v is None else str(v)) for k, v in mapping.items()}


def version_mapping_problems(*, old: JourneyVersion, new: JourneyVersion, mapping: dict) -> list[str]:
    """What is wrong with `mapping` from `old` to `new`, each problem naming the node; [] if it applies."""
    old_nodes, new_nodes = graph_nodes(old.graph), graph_nodes(new.graph)
    old_entry, new_entry = graph_entry(old.graph), graph_entry(new.graph)
    problems = []
    for node_id in mapping:
        if node_id not in old_nodes:
            problems.append(
                _("Version %(version)s has no node %(node)s.") % {"version": old.number, "node": node_id}
            )
    for node_id in old_nodes:
        if node_id not in mapping:
            problems.append(
                _("Choose where the customers at node %(node)s go (a node of version %(version)s, or exit).")
                % {"node": node_id, "version": new.number}
            )
            continue
        target = mapping[node_id]
        if target == EXIT:
            continue
        if target not in new_nodes:
            problems.append(
                _("Node %(node)s is mapped to %(target)s, which version %(version)s does not have.")
                % {"node": node_id, "target": target, "version": new.number}
            )
        elif target == new_entry and node_id != old_entry:
            problems.append(
                _(
                    "Node %(node)s is mapped to the entry of version %(version)s: customers in flight "
                    "cannot start the journey again."
                )
                % {"node": node_id, "version": new.number}
            )
    return problems


def version_live_counts(version: JourneyVersion) -> dict[str, int]:
    """Enrollments in flight at each node of `version` (one GROUP BY on the (version, node, state) index)."""
    return dict(
        Enrollment.objects.filter(version=version, state__in=LIVE_STATES)
        .values_list("node_id")
        .annotate(n=Count("*"))
        .order_by()
    )


def _keeps_waiting(old_node: dict | None, new_node: dict | None) -> bool:
    """Whether an enrollment waiting at `old_node` goes on waiting (same wake-up time) at `new_node`."""
    if not old_node or not new_node or old_node.get("type") != new_node.get("type"):
        return False
    if old_node["type"] == "wait":
        return True
    if old_node["type"] == "wait_for_event":
        event = (old_node.get("config") or {}).get("event_type")
        return bool(event) and event == (new_node.get("config") or {}).get("event_type")
    return False


@dataclass
class MigrationPass:
    moved: int = 0
    exited: int = 0
    left: int = 0  # live enrollments still on the old version: held by a dispatcher, for a later pass
    done: bool = False


def version_migration_run(
    *,
    migration: VersionMigration,
    now: datetime | None = None,
    batch_size: int | None = None,
    max_batches: int | None = None,
) -> MigrationPass:
    """Move the old version's customers in flight as `migration` says, in batches (module docstring).
    Marks the migration done once no live enrollment is left on the old version."""
    now = now or timezone.now()
    size = batch_size or DEFAULT_MIGRATION_BATCH
    result = MigrationPass()
    if migration.mode != InFlight.MOVE or migration.status == MigrationStatus.DONE:
        result.done = True
        return result
    old = JourneyVersion.objects.get(pk=migration.from_version_id)
    new = JourneyVersion.objects.get(pk=migration.to_version_id)
    old_nodes, new_nodes = graph_nodes(old.graph), graph_nodes(new.graph)
    batches = 0
    while max_batches is None or batches < max_batches:
        batches += 1
        with transaction.atomic():
            rows = list(
                Enrollment.objects.select_for_update(skip_locked=True)
                .filter(version_id=old.pk, state__in=LIVE_STATES)
                .filter(Q(claim_token__isnull=True) | Q(claimed_until__lte=now))
                .order_by("pk")
                .values_list("pk", "node_id", "state", "steps_taken", "node_entered_at")[:size]
            )
            if not rows:
                break
            moved, exited = _migrate_batch(
                rows, migration=migration, old=old, new=new, old_nodes=old_nodes, new_nodes=new_nodes, now=now
            )
            VersionMigration.objects.filter(pk=migration.pk).update(
                moved=F("moved") + moved, exited=F("exited") + exited
            )
        result.moved += moved
        result.exited += exited
        if len(rows) < size:
            break
    result.left = Enrollment.objects.filter(version_id=old.pk, state__in=LIVE_STATES).count()
    if not result.left:
        VersionMigration.objects.filter(pk=migration.pk, status=MigrationStatus.RUNNING).update(
            status=MigrationStatus.DONE, finished_at=now
        )
        result.done = True
    migration.refresh_from_db(fields=["moved", "exited", "status", "finished_at"])
    return result


def _migrate_batch(rows, *, migration, old, new, old_nodes, new_nodes, now) -> tuple[int, int]:
    """One locked batch: per old node, the enrollments' UPDATEs and their open steps closed, then one
    insert of every step that records the move. Returns (moved, exited)."""
    # (old node, target, was waiting) -> ids; a group is one UPDATE.
    groups: dict[tuple[str, str, bool], list[int]] = defaultdict(list)
    new_steps: list[EnrollmentStep] = []
    for pk, node_id, state, steps_taken, node_entered_at in rows:
        target = migration.mapping.get(node_id, EXIT)
        if target and target not in new_nodes:
            target = EXIT  # checked at publish; a node the old version never had cannot be mapped either
        waiting = state == EnrollmentState.WAITING
        groups[(node_id, target, waiting)].append(pk)
        keeps = waiting and target and _keeps_waiting(old_nodes.get(node_id), new_nodes.get(target))
        if not waiting:
            # Standing at the node, not yet run there: the step records that it was there and left.
            new_steps.append(
                EnrollmentStep(
                    enrollment_id=pk,
                    version_id=old.pk,
                    node_id=node_id,
                    visit=steps_taken + 1,
                    entered_at=node_entered_at or now,
                    left_at=now,
                    outcome=StepOutcome.MOVED if target else StepOutcome.EXITED,
                    detail=_detail(new, target),
                )
            )
        elif keeps:
            new_steps.append(
                EnrollmentStep(
                    enrollment_id=pk,
                    version_id=new.pk,
                    node_id=target,
                    visit=steps_taken + 1,
                    entered_at=now,
                    left_at=None,
                    outcome=StepOutcome.WAITING,
                    detail={"moved_from": {"version": old.number, "node": node_id}},
                )
            )
    moved = exited = 0
    for (node_id, target, waiting), ids in groups.items():
        keeps = waiting and target and _keeps_waiting(old_nodes.get(node_id), new_nodes.get(target))
        if waiting:
            # The open step of the wait they leave.
            EnrollmentStep.objects.filter(
                enrollment_id__in=ids, version_id=old.pk, left_at__isnull=True, outcome=StepOutcome.WAITING
            ).update(
                left_at=now,
                outcome=StepOutcome.MOVED if target else StepOutcome.EXITED,
                detail=_detail(new, target),
            )
        # A step was added for those not waiting, and for those going on waiting at the new node.
        step_added = (not waiting) or keeps
        common = {
            "steps_taken": F("steps_taken") + 1 if step_added else F("steps_taken"),
            "claim_token": None,
            "claimed_until": None,
        }
        queryset = Enrollment.objects.filter(pk__in=ids)
        if not target:
            queryset.update(
                **common,
                state=EnrollmentState.EXITED,
                finished_at=now,
                due_at=None,
                waiting_for="",
                wake_handle="",
                reason="version_node_unmapped",
                reason_params={"node": node_id, "version": new.number},
            )
            exited += len(ids)
        elif keeps:
            # Same wait, same wake-up time, same event (and a wake the event consumer already set).
            queryset.update(**common, version_id=new.pk, node_id=target)
            moved += len(ids)
        else:
            queryset.update(
                **common,
                version_id=new.pk,
                node_id=target,
                state=EnrollmentState.ACTIVE,
                due_at=now,
                node_entered_at=now,
                waiting_for="",
                wake_handle="",
                attempts=0,
            )
            moved += len(ids)
    # COPY on PostgreSQL: the batch's steps are one stream, not thousands of INSERT rows (as the engine's).
    insert_rows(EnrollmentStep, new_steps)
    return moved, exited


def _detail(new: JourneyVersion, target: str) -> dict:
    return {"to_version": new.number, "to_node": target or None}


def version_migrations_continue(*, now: datetime | None = None) -> int:
    """Go on with every migration still running (enrollments a dispatcher held at the last pass).
    Returns how many enrollments were moved or exited."""
    now = now or timezone.now()
    total = 0
    for migration in VersionMigration.objects.filter(status=MigrationStatus.RUNNING).order_by("pk"):
        progress = version_migration_run(migration=migration, now=now)
        total += progress.moved + progress.exited
    return total
