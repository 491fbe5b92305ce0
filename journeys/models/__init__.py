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
]
