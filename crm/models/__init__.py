"""The customer data platform's tables, one module per subject: the customer and its identities
(customers.py), consent (consent.py), products, orders and refunds (orders.py), the behaviour-event log
(events.py), tags (tags.py), privacy requests (privacy.py), API keys (api_keys.py), import jobs and
heartbeats (jobs.py), computed customer intelligence (metrics.py), segments (segments.py),
recommendations (recommendations.py) and the dashboards' tables (analytics.py).

Other apps read from here and never the other way round (see ../shared/DESIGN.md §4). News travels
rightwards through the append-only `Event` log. Import from `crm.models`; the submodules are its layout.
The order below is the order the models were defined in before the split (the app registry and the
generic re-pointing of a merge follow it).
"""

# isort: off
from crm.models.customers import (  # noqa: F401
    Channel,
    Customer,
    CustomerIdentity,
    CustomerMerge,
    IdentityKind,
    PROFILE_ACQUISITION_FIELDS,
    PROFILE_FIELDS,
    PROFILE_PERSONAL_FIELDS,
    default_time_zone,
    identity_kind_validator,
    validate_time_zone,
)
from crm.models.consent import Consent, ConsentChange, ConsentChannel, ConsentStatus  # noqa: F401
from crm.models.orders import Order, OrderLine, OrderStatus, Product, Refund  # noqa: F401
from crm.models.events import Event, EventLogCursor  # noqa: F401
from crm.models.tags import CustomerTag, Tag  # noqa: F401
from crm.models.privacy import PrivacyRequest  # noqa: F401
from crm.models.api_keys import ApiKey  # noqa: F401
from crm.models.jobs import Heartbeat, ImportJob, Leased  # noqa: F401
from crm.models.metrics import (  # noqa: F401
    LIFECYCLE_STAGE_CHANGED,
    CustomerMetrics,
    LifecycleSettings,
    LifecycleStage,
    MetricsRun,
    RfmSegment,
    ValueTier,
)
from crm.models.segments import (  # noqa: F401
    Segment,
    SegmentSnapshot,
    SegmentSnapshotMember,
    StaticList,
    StaticListMember,
    empty_rule,
)
from crm.models.recommendations import ProductAffinity  # noqa: F401
from crm.models.analytics import AcquisitionCost, DashboardSummary  # noqa: F401
# isort: on
