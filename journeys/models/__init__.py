"""The journeys tables: journeys and their versions (the graphs), enrollments and their steps."""

from journeys.models.enrollments import (
    LIVE_STATES,
    Arm,
    Enrollment,
    EnrollmentState,
    EnrollmentStep,
    StepOutcome,
)
from journeys.models.journeys import Journey, JourneyStatus, JourneyVersion, VersionStatus
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
    "Journey",
    "JourneyStatus",
    "JourneyVersion",
    "StepOutcome",
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
