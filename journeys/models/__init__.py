"""The journeys tables: journeys and their versions (the graphs), enrollments and their steps."""

from journeys.models.enrollments import (
    LIVE_STATES,
    Arm,
    Enrollment,
    EnrollmentState,
    EnrollmentStep,
    StepOutcome,
)
from journeys.models.journeys import (
    InFlight,
    Journey,
    JourneyStatus,
    JourneyVersion,
    MigrationStatus,
    VersionMigration,
    VersionStatus,
)
from journeys.models.triggers import SegmentTriggerMember, TimeTriggerState
from journeys.models.winback import (
    BudgetKind,
    WinbackAssignment,
    WinbackAudience,
    WinbackOffer,
    WinbackPhase,
    WinbackProgramme,
    WinbackRun,
    WinbackRunStatus,
)

__all__ = [
    "LIVE_STATES",
    "Arm",
    "Enrollment",
    "EnrollmentState",
    "EnrollmentStep",
    "InFlight",
    "Journey",
    "JourneyStatus",
    "JourneyVersion",
    "MigrationStatus",
    "SegmentTriggerMember",
    "StepOutcome",
    "TimeTriggerState",
    "VersionMigration",
    "VersionStatus",
    "BudgetKind",
    "WinbackAssignment",
    "WinbackAudience",
    "WinbackOffer",
    "WinbackPhase",
    "WinbackProgramme",
    "WinbackRun",
    "WinbackRunStatus",
]
