"""Enrollments (one customer's way through one journey version) and their steps.

An enrollment is due work: `due_at` says when the dispatcher should next look at it (now, after a wait,
at a wait-for-event's timeout, at a webhook's next retry). The dispatcher claims due rows in batches with
FOR UPDATE SKIP LOCKED and a lease (`claim_token`, `claimed_until`), commits, then advances them; a
worker killed mid-batch leaves its lease to lapse and the next claim takes the rows back
(journeys/services/engine.py). Every step an enrollment takes is a row keyed by (enrollment, node,
visit): recording a step twice is refused by the database, and each side effect's idempotency key is
built from the same triple, so a batch replayed after a crash neither repeats a step nor a side effect.
"""

from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _


class EnrollmentState(models.TextChoices):
    ACTIVE = "active", _("Active")
    WAITING = "waiting", _("Waiting")
    COMPLETED = "completed", _("Completed")
    EXITED = "exited", _("Exited")
    GOAL = "goal", _("Reached the goal")
    FAILED = "failed", _("Failed")


# The dispatcher's claim and its partial index use exactly these.
LIVE_STATES = (EnrollmentState.ACTIVE, EnrollmentState.WAITING)


class Arm(models.TextChoices):
    TREATED = "treated", _("Treated")
    HOLDOUT = "holdout", _("Holdout")


class StepOutcome(models.TextChoices):
    PASSED = "passed", _("Passed")
    WAITING = "waiting", _("Waiting")
    EXITED = "exited", _("Exited")
    GOAL = "goal", _("Reached the goal")
    FAILED = "failed", _("Failed")
    # Left this node because staff moved the customers in flight to a new version (VersionMigration).
    MOVED = "moved", _("Moved to a new version")


class Enrollment(models.Model):
    customer = models.ForeignKey(
        "crm.Customer", on_delete=models.CASCADE, related_name="+", db_index=False, verbose_name=_("customer")
    )
    # The journey as well as the version: the occurrence key is per journey (a customer who entered v1
    # for the 2027 birthday does not enter v2 for it), and a unique constraint cannot reach through a FK.
    journey = models.ForeignKey(
        "journeys.Journey", on_delete=models.CASCADE, related_name="+", verbose_name=_("journey")
    )
    version = models.ForeignKey(
        "journeys.JourneyVersion",
        on_delete=models.PROTECT,
        related_name="enrollments",
        verbose_name=_("version"),
    )
    node_id = models.CharField(_("node"), max_length=64)
    state = models.CharField(
        _("state"), max_length=16, choices=EnrollmentState.choices, default=EnrollmentState.ACTIVE
    )
    arm = models.CharField(_("arm"), max_length=8, choices=Arm.choices, default=Arm.TREATED)
    # The entry's occurrence: "2027" for a yearly birthday, the event id for an event entry, the entry
    # time for a journey customers may enter again.
    occurrence = models.CharField(_("occurrence"), max_length=100)
    entered_at = models.DateTimeField(_("entered at"), default=timezone.now)
    due_at = models.DateTimeField(_("wakes up at"), null=True, blank=True)
    finished_at = models.DateTimeField(_("finished at"), null=True, blank=True)
    # How many steps the enrollment has taken: the next step's visit number (see EnrollmentStep.visit).
    steps_taken = models.PositiveIntegerField(_("steps taken"), default=0)
    # Attempts at the current node (a webhook's retries); reset when the enrollment moves on.
    attempts = models.PositiveSmallIntegerField(_("attempts"), default=0)
    # When the enrollment reached its current node (a wait-for-event counts only events from then on).
    node_entered_at = models.DateTimeField(_("at this node since"), null=True, blank=True)
    # Set while waiting at a wait-for-event node: the event the event-log consumer looks for.
    waiting_for = models.CharField(_("waiting for event"), max_length=64, blank=True)
    # The exit the event-log consumer chose for a waiting enrollment ("event"); the dispatcher takes it
    # at its next claim, under the same lock as every other move, so the consumer never races a timeout.
    wake_handle = models.CharField(_("wakes up through"), max_length=64, blank=True)
    # Why the enrollment ended or failed, as a code with parameters (translated when shown).
    reason = models.CharField(_("reason"), max_length=40, blank=True)
    reason_params = models.JSONField(_("reason parameters"), default=dict, blank=True)
    claim_token = models.UUIDField(_("claim token"), null=True, blank=True, editable=False)
    claimed_until = models.DateTimeField(_("claimed until"), null=True, blank=True, editable=False)

    class Meta:
        verbose_name = _("enrollment")
        verbose_name_plural = _("enrollments")
        constraints = [
            models.UniqueConstraint(
                fields=["journey", "customer", "occurrence"], name="journeys_enrollment_occurrence"
            ),
        ]
        indexes = [
            # The dispatcher's claim: live rows by wake-up time, read from the front of this index.
            models.Index(
                fields=["due_at"],
                condition=Q(state__in=["active", "waiting"], due_at__isnull=False),
                name="journeys_enrollment_due",
            ),
            # Re-entry checks and goal exits look up a customer's enrollments in a journey.
            models.Index(fields=["customer", "journey", "-entered_at"], name="journeys_enrollment_customer"),
            # The event consumer: who is waiting for this event.
            models.Index(
                fields=["customer", "waiting_for"],
                condition=Q(state="waiting") & ~Q(waiting_for=""),
                name="journeys_enrollment_waiting",
            ),
            # Per-node counts on the canvas (journey_node_counts).
            models.Index(fields=["version", "node_id", "state"], name="journeys_enrollment_node"),
        ]

    def __str__(self) -> str:
        return f"{self.journey_id}/{self.customer_id}/{self.occurrence}"


class EnrollmentStep(models.Model):
    enrollment = models.ForeignKey(
        Enrollment,
        on_delete=models.CASCADE,
        related_name="steps",
        db_index=False,
        verbose_name=_("enrollment"),
    )
    # Copied from the enrollment so per-node counts group steps without a join over millions of rows. No
    # database constraint: the enrollment's own foreign key already guarantees the version, and checking
    # it again for every step at commit was a measurable part of a batch's commit (BENCHMARKS.md).
    version = models.ForeignKey(
        "journeys.JourneyVersion",
        on_delete=models.CASCADE,
        related_name="+",
        db_index=False,
        db_constraint=False,
        verbose_name=_("version"),
    )
    node_id = models.CharField(_("node"), max_length=64)
    # The enrollment's step number when it entered this node: a node visited twice (a loop through a
    # wait) has two steps, and each visit's side effects carry their own idempotency key.
    visit = models.PositiveIntegerField(_("visit"))
    entered_at = models.DateTimeField(_("entered at"))
    left_at = models.DateTimeField(_("left at"), null=True, blank=True)
    outcome = models.CharField(_("outcome"), max_length=16, choices=StepOutcome.choices)
    handle = models.CharField(_("exit taken"), max_length=64, blank=True)
    detail = models.JSONField(_("detail"), default=dict, blank=True)

    class Meta:
        verbose_name = _("enrollment step")
        verbose_name_plural = _("enrollment steps")
        constraints = [
            models.UniqueConstraint(fields=["enrollment", "node_id", "visit"], name="journeys_step_visit"),
        ]
        indexes = [models.Index(fields=["version", "node_id", "outcome"], name="journeys_step_node")]

    def __str__(self) -> str:
        return f"{self.enrollment_id}:{self.node_id}:{self.visit}"
