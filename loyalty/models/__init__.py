"""Loyalty tables: the programme and ledger (ledger.py) and the rewards catalogue and coupons (rewards.py)."""

from loyalty.models.ledger import (  # noqa: F401
    BonusEvent,
    BulkAdjustmentBatch,
    BulkAdjustmentLine,
    EarnRule,
    EntryKind,
    ExpiryPolicy,
    ExpiryRun,
    LedgerEntry,
    LotConsumption,
    LoyaltyAccount,
    ManualAdjustment,
    OwedPoints,
    PointLot,
    ProgrammeSettings,
    Promotion,
    RuleUsage,
    Tier,
    TierBasis,
    TierChange,
)
from loyalty.models.rewards import *  # noqa: F401,F403
