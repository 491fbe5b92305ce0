"""One settings module, configured by environment variables (12-factor).

Defaults give the embedded set-up of `make run`: SQLite and a server-less Celery broker under var/.
DATABASE_URL and CELERY_BROKER_URL switch to PostgreSQL and Redis with no code change.
DJANGO_ENV=production turns on the secure settings that `manage.py check --deploy` expects and
refuses to start without a real secret key and allowed hosts.
"""

import os
import zoneinfo
from pathlib import Path

import environ
from django.utils.translation import gettext_lazy as _

from campaigns.notice_schedule import NOTICES_BEAT_SCHEDULE
from campaigns.schedule import messaging_beat_schedule
from crm.analytics.schedule import ANALYTICS_BEAT_SCHEDULE
from crm.metrics.schedule import METRICS_BEAT_SCHEDULE
from crm.recommendations.schedule import RECOMMENDATIONS_BEAT_SCHEDULE
from crm.schedule import jobs_beat_schedule
from journeys.schedule import journeys_beat_schedule
from loyalty.schedule import LOYALTY_BEAT_SCHEDULE

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"

env = environ.Env()
DJANGO_ENV = env.str("DJANGO_ENV", default="development")
if DJANGO_ENV not in {"development", "test", "production"}:
    raise environ.ImproperlyConfigured(
        f"DJANGO_ENV must be development, test or production, not {DJANGO_ENV!r}"
    )
PRODUCTION = DJANGO_ENV == "production"

if PRODUCTION:
    # No defaults in production: a missing variable must stop the process, not weaken it.
    SECRET_KEY = env.str("DJANGO_SECRET_KEY")
    ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS")
    DEBUG = False
else:
    SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="dev-only-insecure-key-do-not-use-in-production")
    ALLOWED_HOSTS = env.list(
        "DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]", "testserver"]
    )
    DEBUG = env.bool("DJANGO_DEBUG", default=DJANGO_ENV == "development")

CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    # The admin theme (config/admin_site.py): before django.contrib.admin so that its templates win.
    "unfold",
    "unfold.contrib.filters",
    "unfold.contrib.simple_history",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI and Redoc files, served by us: /api/docs/ works offline
    "django_filters",
    "django_celery_beat",
    "simple_history",
    "axes",
    "crm",
    "loyalty",
    "campaigns",
    "journeys",
    "config.apps.ProjectConfig",  # composes the apps' staff roles (config/roles.py)
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "simple_history.middleware.HistoryRequestMiddleware",
    # Last, as django-axes asks: it turns a locked-out login into a clear page, not a 500.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------------
VAR_DIR.mkdir(exist_ok=True)
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'db.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # IMMEDIATE takes the write lock when a transaction starts, so two writers queue up instead of
    # one failing with "database is locked" half-way through; WAL lets readers go on meanwhile.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    )
    # models.W040: SQLite has no INCLUDE columns, so the covering indexes (crm/0010, made for
    # PostgreSQL's index-only scans) are built there as plain indexes on their key columns. That is all
    # the embedded demo needs, and nothing is to be done about it: the warning only alarms.
    SILENCED_SYSTEM_CHECKS = ["models.W040"]
else:
    DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("DB_CONN_MAX_AGE", default=60))
    DATABASES["default"].setdefault("CONN_HEALTH_CHECKS", True)
    # Statements run through crm.db.server_binding_cursor are prepared after this many runs on a connection
    # (Django's own cursors never are). Set DB_PREPARE_THRESHOLD=off behind a transaction-pooling
    # PgBouncer older than 1.21, which cannot keep prepared statements.
    prepare_threshold = env.str("DB_PREPARE_THRESHOLD", default="5")
    DATABASES["default"].setdefault("OPTIONS", {})["prepare_threshold"] = (
        None if prepare_threshold.lower() in {"off", "none", ""} else int(prepare_threshold)
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache ----------------------------------------------------------------------------------------
# Per-member API rate limits count in the cache: set CACHE_URL=redis://... when several processes serve.
CACHES = {"default": env.cache("CACHE_URL", default="locmemcache://")}
# django-environ lower-cases every query option of a redis:// URL for Django's own RedisCache, the generic
# ones too, and Django reads those only in upper case: `?key_prefix=staging` would be dropped silently
# and two deployments sharing a Redis database would share their rate-limit counters.
for _option in ("key_prefix", "timeout", "version", "key_function"):
    if _option in CACHES["default"]:
        CACHES["default"][_option.upper()] = CACHES["default"].pop(_option)
if CACHES["default"]["BACKEND"] == "django.core.cache.backends.locmem.LocMemCache":
    # The member API's per-member throttles keep one key per active member; at the default 300 entries a
    # busy process would keep culling them and forget who has used up their rate.
    CACHES["default"].setdefault("OPTIONS", {}).setdefault("MAX_ENTRIES", 100_000)

# --- Auth -----------------------------------------------------------------------------------------
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# Django's auth login is the staff admin's (members sign in through the portal's own views): unfold's login
# form posts no "next" field, so without this a plain /admin/login/ would land on /accounts/profile/, a 404.
LOGIN_REDIRECT_URL = "/admin/"
# How many proxies in front of the web servers append the address they saw to X-Forwarded-For (the TLS
# proxy of the README's production set-up: 1). The client is that many addresses from the right, for
# django-axes (config/client_ip.py) and DRF's throttles (NUM_PROXIES) alike. 0, the default, ignores the
# header: a client could otherwise write a new address per request and never be throttled or locked.
TRUSTED_PROXY_COUNT = env.int("TRUSTED_PROXY_COUNT", default=0)
if TRUSTED_PROXY_COUNT < 0:
    raise environ.ImproperlyConfigured(
        f"TRUSTED_PROXY_COUNT must be 0 or the number of proxies in front of the app, not {TRUSTED_PROXY_COUNT}"
    )
# Login throttling on the admin and the member sign-in: five failures lock that user name from that
# address for 15 minutes.
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = 0.25  # hours
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_ENABLED = env.bool("AXES_ENABLED", default=True)
AXES_LOCKOUT_TEMPLATE = "admin/crm/lockout.html"
AXES_CLIENT_IP_CALLABLE = "config.client_ip.client_ip_address"

# --- i18n / time ----------------------------------------------------------------------------------
LANGUAGE_CODE = "en"
LANGUAGES = [("en", _("English")), ("zh-hans", _("Simplified Chinese"))]
LOCALE_PATHS = [BASE_DIR / "locale"]
USE_I18N = True
USE_TZ = True
# The business time zone: the admin, the member portal and the dashboards show times in it, and the
# metrics count days in it (crm/clock.py). Storage stays UTC.
TIME_ZONE = env.str("TIME_ZONE", default="Asia/Shanghai")
try:
    zoneinfo.ZoneInfo(TIME_ZONE)
except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
    # Fail at start-up: a typo would otherwise show every time and count every day in the wrong zone.
    raise environ.ImproperlyConfigured(
        f"TIME_ZONE must be an IANA time zone such as Asia/Shanghai or Europe/Paris, not {TIME_ZONE!r}"
    ) from exc
# Dates and times in the locale's format: formats/<locale>/formats.py override Django's defaults.
FORMAT_MODULE_PATH = ["config.formats"]
DEFAULT_CUSTOMER_TIME_ZONE = "Asia/Shanghai"

# --- Static ---------------------------------------------------------------------------------------
STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "staticfiles"
STATIC_ROOT.mkdir(exist_ok=True)  # WhiteNoise warns on every request when it is missing
# Front-end libraries come from the npm registry (package.json + lock, `npm ci` in `make run`/`make test`)
# and are served from node_modules under static/vendor/; nothing is copied into the repository.
STATICFILES_DIRS = [
    BASE_DIR / "static",
    ("vendor/chart.js", BASE_DIR / "node_modules" / "chart.js" / "dist"),
    ("vendor/chartjs-chart-matrix", BASE_DIR / "node_modules" / "chartjs-chart-matrix" / "dist"),
]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if PRODUCTION
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
MEDIA_ROOT = VAR_DIR / "media"

# --- Admin (django-unfold) -------------------------------------------------------------------------
# The brand the staff admin wears: its name in the header and the browser tab, its logo (a URL, or a path
# under static/). "View site" leads to the member portal, the site members see.
BRAND_NAME = env.str("BRAND_NAME", default="Marketing operations")
BRAND_LOGO = env.str("BRAND_LOGO", default="brand/logo.svg")
UNFOLD = {
    "SITE_TITLE": BRAND_NAME,
    "SITE_HEADER": BRAND_NAME,
    "SITE_SUBHEADER": _("Marketing workspace"),
    "SITE_URL": "/member/",
    "SITE_ICON": "config.admin_branding.brand_logo_url",
    "SITE_FAVICONS": [
        {"rel": "icon", "type": "image/svg+xml", "href": "config.admin_branding.brand_logo_url"}
    ],
    "SHOW_LANGUAGES": True,
    "SHOW_VIEW_ON_SITE": True,
    "DASHBOARD_CALLBACK": "config.admin_home.dashboard_callback",
    "STYLES": ["config.admin_branding.workspace_css_url"],
    "SIDEBAR": {
        "show_search": True,
        "show_all_applications": "config.admin_navigation.show_all_applications",
        "navigation": "config.admin_navigation.sidebar_navigation",
    },
}

# --- Celery ---------------------------------------------------------------------------------------
# CELERY_BROKER_DIR lets a test run its own worker on a private broker folder.
BROKER_DIR = Path(env.str("CELERY_BROKER_DIR", default=str(VAR_DIR / "broker")))
# "localhost" names no server (the transport is files); without a host kombu warns that it assumed one.
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="filesystem://localhost/")
if CELERY_BROKER_URL.startswith("filesystem://"):
    for sub in ("queue", "processed", "control"):
        (BROKER_DIR / sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(BROKER_DIR / "queue"),
        "data_folder_out": str(BROKER_DIR / "queue"),
        "processed_folder": str(BROKER_DIR / "processed"),
        "store_processed": False,
        # Without this kombu writes its broadcast (control) files into the current directory.
        "control_folder": str(BROKER_DIR / "control"),
    }
else:
    # Redis hands an unacknowledged message to another worker after `visibility_timeout`, whether its
    # worker died or is still running it. Long jobs do not wait for that: they hold a lease in the
    # database (JOB_LEASE_SECONDS below) and the reaper resumes a killed one within a lease and a reaper
    # interval. The redelivery is the second line of defence, for the short tasks that hold no lease and
    # for a reaper that is not running; so the timeout is set longer than any task may run (the metrics
    # run's hard limit is 25 minutes), so that a task that is only slow is never run twice at once. A
    # redelivered leased job finds its lease held or the job over, and does nothing. No task uses a
    # countdown or ETA (due work is rows in the database), so Redis never re-sends a waiting one early.
    # CELERY_REDIS_KEY_PREFIX lets several deployments, or test runs, share one Redis database.
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=1800),
        "global_keyprefix": env.str("CELERY_REDIS_KEY_PREFIX", default=""),
    }
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)
# Acknowledge a message when its task ends, not when it starts, and give it back to the broker when a
# pool child dies under it: a task interrupted by a crash runs again (the tasks are idempotent) instead of
# being lost. When the whole worker dies, Redis gives the message back after the visibility timeout and
# the file-system broker has already forgotten it: the leases below cover both.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
# Leases on long jobs (crm/services/leases.py). A worker renews its job's lease every third of
# JOB_LEASE_SECONDS; when it is killed, the job is resumed after at most the lease plus LEASE_REAP_SECONDS
# (the reaper's beat interval). A minute survives a busy worker's pauses (GIL, a slow database), and
# keeps a killed job's recovery to about a minute and a half. A queued job that no worker picked up
# within JOB_PICKUP_SECONDS (its message was lost) is queued again; a longer queue only means a duplicate
# message, which finds the job claimed and does nothing.
JOB_LEASE_SECONDS = env.float("JOB_LEASE_SECONDS", default=60.0)
JOB_PICKUP_SECONDS = env.float("JOB_PICKUP_SECONDS", default=600.0)
LEASE_REAP_SECONDS = env.float("LEASE_REAP_SECONDS", default=30.0)
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
# Campaign occurrences (campaigns/services/occurrences.py, woken by "campaigns-runs-dispatch"): an
# occurrence missed by more than CAMPAIGN_CATCH_UP_SECONDS (the dispatcher was down, the campaign paused)
# is recorded as missed instead of sent late, and of several missed within the window only the latest
# goes out.
CAMPAIGN_CATCH_UP_SECONDS = env.float("CAMPAIGN_CATCH_UP_SECONDS", default=7200.0)
# config/ wires the apps together: each app declares its beat entries in a model-free `schedule` module.
CELERY_BEAT_SCHEDULE = {
    # A heartbeat: /healthz reports when beat last ran from the row this task writes.
    "beat-heartbeat": {"task": "crm.tasks.beat_heartbeat", "schedule": 60.0},
    **jobs_beat_schedule(reap_every=LEASE_REAP_SECONDS),
    **METRICS_BEAT_SCHEDULE,
    **ANALYTICS_BEAT_SCHEDULE,
    **RECOMMENDATIONS_BEAT_SCHEDULE,
    **LOYALTY_BEAT_SCHEDULE,
    **NOTICES_BEAT_SCHEDULE,
    **messaging_beat_schedule(
        dispatch_every=env.float("MESSAGING_DISPATCH_EVERY", default=2.0),
        reap_every=env.float("MESSAGING_REAP_EVERY", default=15.0),
    ),
    **journeys_beat_schedule(
        dispatch_every=env.float("JOURNEYS_DISPATCH_EVERY", default=2.0),
        time_triggers_every=env.float("JOURNEYS_TIME_TRIGGERS_EVERY", default=60.0),
    ),
}
# The journeys engine (journeys/services/engine.py): enrollments per claimed batch, the lease a batch is
# held for (a killed worker's batch comes due again after it), and how long one wake keeps draining.
JOURNEYS_BATCH_SIZE = env.int("JOURNEYS_BATCH_SIZE", default=10_000)
JOURNEYS_LEASE_SECONDS = env.float("JOURNEYS_LEASE_SECONDS", default=120.0)
JOURNEYS_DISPATCH_SECONDS = env.float("JOURNEYS_DISPATCH_SECONDS", default=20.0)
# Time-based entries (journeys/services/time_triggers.py): an occurrence (a birthday at 09:00 local, a
# calendar date, an event not followed in time) that the dispatcher reaches more than this late (it was
# down, the journey paused) is skipped instead of entered: no flood of stale birthday wishes.
JOURNEYS_CATCH_UP_SECONDS = env.float("JOURNEYS_CATCH_UP_SECONDS", default=6 * 3600.0)
# Signs the webhook node's requests (journeys/webhooks.py); empty: derived from SECRET_KEY.
JOURNEYS_WEBHOOK_SECRET = env.str("JOURNEYS_WEBHOOK_SECRET", default="")

# --- REST API -------------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "crm.api.authentication.ApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.CursorPagination",
    "PAGE_SIZE": 100,
    "EXCEPTION_HANDLER": "crm.api.errors.api_exception_handler",
    "UNAUTHENTICATED_USER": None,
    "NUM_PROXIES": TRUSTED_PROXY_COUNT,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Marketing operations API",
    "DESCRIPTION": "Customers, identities, consent, orders and behaviour events.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # The documentation pages' scripts from drf-spectacular-sidecar (our static files), not a CDN: the
    # pages work offline and behind the Great Firewall, and the version is the locked one.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Several fields share these choice sets; name each enum once in the schema.
    "ENUM_NAME_OVERRIDES": {
        "ChannelEnum": "crm.models.Channel.choices",
        "ConsentChannelEnum": "crm.models.ConsentChannel.choices",
        "ConsentStatusEnum": "crm.models.ConsentStatus.choices",
        "OrderStatusEnum": "crm.models.OrderStatus.choices",
        "MessageStatusEnum": "campaigns.models.MessageStatus.choices",
        "MessagePurposeEnum": "campaigns.models.MessagePurpose.choices",
        "SendPurposeEnum": "campaigns.api.serializers.PURPOSE_CHOICES",
        "SendChannelEnum": "campaigns.api.serializers.CHANNEL_CHOICES",
    },
}
# Request bodies above this size are refused with 413 before they are parsed.
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("DATA_UPLOAD_MAX_MEMORY_SIZE", default=5 * 1024 * 1024)
FILE_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024

# --- Security (production) ------------------------------------------------------------------------
if PRODUCTION:
    SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=True)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_HSTS_SECONDS = env.int("DJANGO_SECURE_HSTS_SECONDS", default=31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_CONTENT_TYPE_NOSNIFF = True
    SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"

# --- Email ----------------------------------------------------------------------------------------
EMAIL_BACKEND = env.str("EMAIL_BACKEND", default="django.core.mail.backends.smtp.EmailBackend")
EMAIL_HOST = env.str("EMAIL_HOST", default="localhost")
EMAIL_PORT = env.int("EMAIL_PORT", default=25)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="marketing@example.com")

# --- Messaging (campaigns) ------------------------------------------------------------------------
# The language a customer with none recorded is spoken to in, and the base of every absolute link a message
# carries (tracking, unsubscribe): the address customers reach the site at.
MESSAGING_DEFAULT_LANGUAGE = env.str("MESSAGING_DEFAULT_LANGUAGE", default="zh-hans")
SITE_URL = env.str("SITE_URL", default="http://127.0.0.1:8000").rstrip("/")
# One provider per channel (campaigns/providers/): BACKEND is its class, OPTIONS its settings, RATE its
# global send rate in messages per second across every worker process and host (0: unlimited).
MESSAGING_PROVIDERS = {
    # Outside production, email goes to the console too unless EMAIL_BACKEND or EMAIL_HOST names a real one:
    # `make run` has no mail server to hand messages to.
    "email": {
        "BACKEND": "campaigns.providers.email.DjangoMailProvider"
        if PRODUCTION or "EMAIL_BACKEND" in os.environ or "EMAIL_HOST" in os.environ
        else "campaigns.providers.console.ConsoleProvider",
        "OPTIONS": {},
        "RATE": 0,
    },
    "sms": {"BACKEND": "campaigns.providers.console.ConsoleProvider", "OPTIONS": {}, "RATE": 0},
    "wechat": {"BACKEND": "campaigns.providers.console.ConsoleProvider", "OPTIONS": {}, "RATE": 0},
    "push": {"BACKEND": "campaigns.providers.console.ConsoleProvider", "OPTIONS": {}, "RATE": 0},
}
# Where the providers' global send rates count: a redis:// URL (production, several hosts) or "db" (the
# embedded default: the provider_state table, one row per provider).
MESSAGING_RATE_LIMIT_URL = env.str("MESSAGING_RATE_LIMIT_URL", default="db")
# A mailbox that processes unsubscribe mails, for the mailto: form of List-Unsubscribe (optional: the
# signed https link, with List-Unsubscribe-Post, is what RFC 8058 one-click uses).
MESSAGING_UNSUBSCRIBE_MAILTO = env.str("MESSAGING_UNSUBSCRIBE_MAILTO", default="")
# anymail's webhooks (/anymail/<esp>/tracking/) accept only requests with this HTTP basic auth,
# "user:password" (several, comma-separated, while rotating); give the ESP the URL
# https://user:password@<host>/anymail/<esp>/tracking/. Unset, anymail warns and accepts anyone.
ANYMAIL = {"WEBHOOK_SECRET": env.list("ANYMAIL_WEBHOOK_SECRET", default=[])}
# The dispatcher (campaigns/services/dispatch.py): messages claimed at a time; the claim's lease, after
# which the reaper takes a dead worker's batch back (a batch must be handed over within it; keep it well
# above a provider's slowest answer for a batch); how long one wake drains before it lets the worker go.
MESSAGING_BATCH_SIZE = env.int("MESSAGING_BATCH_SIZE", default=500)
MESSAGING_CLAIM_SECONDS = env.float("MESSAGING_CLAIM_SECONDS", default=120.0)
MESSAGING_DISPATCH_SECONDS = env.float("MESSAGING_DISPATCH_SECONDS", default=20.0)
# Retries after "try again later": exponential back-off from the base, capped, with jitter; the last
# attempt that still fails is final (retries_exhausted).
MESSAGING_MAX_ATTEMPTS = env.int("MESSAGING_MAX_ATTEMPTS", default=8)
MESSAGING_RETRY_BASE_SECONDS = env.float("MESSAGING_RETRY_BASE_SECONDS", default=30.0)
MESSAGING_RETRY_MAX_SECONDS = env.float("MESSAGING_RETRY_MAX_SECONDS", default=3600.0)

# --- Logging --------------------------------------------------------------------------------------
# One JSON object per line in production (LOG_FORMAT=json), readable lines elsewhere.
LOG_FORMAT = env.str("LOG_FORMAT", default="json" if PRODUCTION else "text")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
        },
        "text": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        # django-axes announces its version at INFO in every process it starts in.
        "axes.apps": {"level": "WARNING"},
    },
}
