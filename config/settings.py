"""Settings for the whole platform, read from the environment (see `.env.example`)."""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from config.env import envbool, envfloat, envint, envlist, envsecret, envstr

BASE_DIR = Path(__file__).resolve().parent.parent

# Under pytest the default is "test" (fast password hashing, a separate Redis key prefix).
_UNDER_PYTEST = "pytest" in sys.modules
PLATFORM_ENV = envstr(
    "PLATFORM_ENV", "test" if _UNDER_PYTEST else "development"
)  # development | test | production
DEBUG = envbool("DEBUG", PLATFORM_ENV == "development")

_DEV_SECRET = "dev-insecure-secret-change-me"
SECRET_KEY = envsecret("DJANGO_SECRET_KEY", _DEV_SECRET)
JWT_SECRET_KEY = envsecret("JWT_SECRET_KEY", _DEV_SECRET + "-jwt")
JWT_ALGORITHM = envstr("JWT_ALGORITHM", "HS256")
JWT_PRIVATE_KEY = envsecret("JWT_PRIVATE_KEY", "")
JWT_PUBLIC_KEY = envsecret("JWT_PUBLIC_KEY", "")
JWT_AUDIENCE = envstr("JWT_AUDIENCE", "chat-platform")
JWT_ISSUER = envstr("JWT_ISSUER", "chat-platform")
JWT_EXPIRATION_MINUTES = envint("JWT_EXPIRATION_MINUTES", 30)
JWT_REFRESH_EXPIRATION_DAYS = envint("JWT_REFRESH_EXPIRATION_DAYS", 7)

if JWT_ALGORITHM not in {"HS256", "RS256"}:
    raise ImproperlyConfigured("JWT_ALGORITHM must be HS256 or RS256")
if JWT_ALGORITHM == "RS256" and not (JWT_PRIVATE_KEY and JWT_PUBLIC_KEY):
    raise ImproperlyConfigured("JWT_ALGORITHM=RS256 needs JWT_PRIVATE_KEY and JWT_PUBLIC_KEY (PEM)")
if PLATFORM_ENV == "production":
    if SECRET_KEY.startswith(_DEV_SECRET) or (
        JWT_ALGORITHM == "HS256" and JWT_SECRET_KEY.startswith(_DEV_SECRET)
    ):
        raise ImproperlyConfigured(
            "Refusing to start in production with a default secret: "
            "set DJANGO_SECRET_KEY and JWT_SECRET_KEY (or JWT_ALGORITHM=RS256 with a key pair)."
        )
    if DEBUG:
        raise ImproperlyConfigured("DEBUG must be off in production")

# Only schema-per-tenant isolation is implemented; the variable exists so that a deployment
# asking for something else fails loudly instead of silently sharing tables.
TENANT_ISOLATION_MODE = envstr("TENANT_ISOLATION_MODE", "schema")
if TENANT_ISOLATION_MODE != "schema":
    raise ImproperlyConfigured("TENANT_ISOLATION_MODE: only 'schema' is supported")

ALLOWED_HOSTS = envlist("ALLOWED_HOSTS", "localhost,.localhost,127.0.0.1,testserver")
CSRF_TRUSTED_ORIGINS = envlist(
    "CSRF_TRUSTED_ORIGINS", "http://localhost:8000,http://*.localhost:8000,http://127.0.0.1:8000"
)
# The domain tenants get a subdomain of: `<slug>.<TENANT_BASE_DOMAIN>`.
TENANT_BASE_DOMAIN = envstr("TENANT_BASE_DOMAIN", "localhost")

SHARED_APPS = [
    "django_tenants",
    "tenants",
    "routing",
    "billing",
    "daphne",
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.admin",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "django_prometheus",
    "channels",
]
# Every tenant schema gets its own users, groups, sessions and chat data.
TENANT_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "django.contrib.admin",
    "django.contrib.messages",
    "chat",
    "billing",
    "routing",
]
INSTALLED_APPS = list(SHARED_APPS) + [app for app in TENANT_APPS if app not in SHARED_APPS]

TENANT_MODEL = "tenants.Tenant"
# django-tenants sets the search_path once per connection use and schema switch, not before every
# query: activating a tenant, a rollback and giving the connection back to the pool all reset it.
TENANT_LIMIT_SET_CALLS = envbool("TENANT_LIMIT_SET_CALLS", True)
TENANT_DOMAIN_MODEL = "tenants.Domain"
# The first router answers every question; django-tenants insists on seeing its own listed too.
DATABASE_ROUTERS = ("config.db_router.ScopedTenantSyncRouter", "django_tenants.routers.TenantSyncRouter")
PUBLIC_SCHEMA_NAME = "public"

MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "config.middleware.RequestIdMiddleware",
    # Outside the tenant middleware, so its refusals get a policy and (for browsers) a page.
    "config.security.ContentSecurityPolicyMiddleware",
    "chat.ui_errors.TenantErrorPageMiddleware",
    "tenants.middleware.TenantResolutionMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

# The machine-facing OpenAI/Anthropic-compatible endpoints (async views, bearer credentials, no
# cookies) run through a chain of their own (config/asgi.py): no sessions, CSRF, messages or
# frame options, whose hooks each cost a hop to a worker thread under ASGI, and the tenant
# resolved on the event loop. Same request ids, tracing, security headers and metrics.
API_PATH_PREFIXES = ("/v1/",)
API_MIDDLEWARE = [
    "config.middleware.ApiPrometheusBeforeMiddleware",
    "config.middleware.RequestIdMiddleware",
    "config.tracing.TraceIdMiddleware",
    "config.security.ContentSecurityPolicyMiddleware",
    "config.middleware.ApiSecurityMiddleware",
    "tenants.middleware.ApiTenantResolutionMiddleware",
    "config.middleware.ApiPrometheusAfterMiddleware",
]

ROOT_URLCONF = "config.urls_tenant"
PUBLIC_SCHEMA_URLCONF = "config.urls_public"

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

WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

DATABASE_URL = envstr("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/chatplatform")
DATABASES = {
    "default": dj_database_url.parse(
        DATABASE_URL,
        engine="django_tenants.postgresql_backend",
        # 0 under ASGI, as Django advises: each request's sync work runs in a thread of its own,
        # and a persistent connection per finished thread is a connection leak.
        conn_max_age=envint("DB_CONN_MAX_AGE", 0),
        conn_health_checks=True,
    )
}
# A pool of connections per process (psycopg_pool, Django's `pool` option): each request borrows
# one for its sync work and gives it back when it ends. Without it every request opened its own
# connection, and Postgres forked a backend for it: at 200 requests a second that was most of a
# core (benchmarks/peer_gateway.sh profile). The schema is safe to share: django-tenants sets the
# search_path on every cursor, and the RLS tenant setting is transaction-local (billing/rls.py).
if envbool("DB_POOL", True):
    DATABASES["default"]["CONN_MAX_AGE"] = 0  # the pool keeps connections; Django must not
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = False
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": envint("DB_POOL_MIN_SIZE", 2),
        "max_size": envint("DB_POOL_MAX_SIZE", 20),
        # A request waits this long for a free connection before failing with a 503-worthy error.
        "timeout": envfloat("DB_POOL_TIMEOUT", 10.0),
    }
# Several test runs on one machine (a developer and a helper, say) each need their own database.
DATABASES["default"]["TEST"] = {"NAME": envstr("TEST_DATABASE_NAME", "test_chatplatform")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = envstr("REDIS_URL", "redis://127.0.0.1:6379/0")
# Connections of a process' asyncio Redis client (config/redis.py). Every streamed answer a client
# is reading holds one for its blocking XREAD, so this bounds the answers read at once per
# process; past it a call waits up to REDIS_POOL_TIMEOUT seconds for a free connection.
REDIS_MAX_CONNECTIONS = envint("REDIS_MAX_CONNECTIONS", 2000)
REDIS_POOL_TIMEOUT = envfloat("REDIS_POOL_TIMEOUT", 5.0)
REDIS_SOCKET_TIMEOUT = envfloat("REDIS_SOCKET_TIMEOUT", 10.0)
# Every Redis key the platform writes starts with this, so several deployments (or a test run
# next to a dev server) can share one Redis without seeing each other's keys.
REDIS_KEY_PREFIX = envstr("REDIS_KEY_PREFIX", "gwtest" if PLATFORM_ENV == "test" else "gw")

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": REDIS_KEY_PREFIX,
        # django-tenants' key function puts the schema name in every cache key.
        "KEY_FUNCTION": "django_tenants.cache.make_key",
        "REVERSE_KEY_FUNCTION": "django_tenants.cache.reverse_key",
    }
}

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [REDIS_URL], "prefix": f"{REDIS_KEY_PREFIX}:asgi"},
    }
}

CELERY_BROKER_URL = envstr("CELERY_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")
CELERY_TASK_ALWAYS_EAGER = envbool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
if PLATFORM_ENV == "test":
    # Hashing with the production work factor would dominate the suite's run time.
    PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "staticfiles"

SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_SECURE = envbool("SESSION_COOKIE_SECURE", PLATFORM_ENV == "production")
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "tenants.authentication.TenantJWTAuthentication",
        "tenants.authentication.ApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "config.errors.api_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}

SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(minutes=JWT_EXPIRATION_MINUTES),
    "REFRESH_TOKEN_LIFETIME": timedelta(days=JWT_REFRESH_EXPIRATION_DAYS),
    "ALGORITHM": JWT_ALGORITHM,
    "SIGNING_KEY": JWT_PRIVATE_KEY if JWT_ALGORITHM == "RS256" else JWT_SECRET_KEY,
    "VERIFYING_KEY": JWT_PUBLIC_KEY if JWT_ALGORITHM == "RS256" else "",
    "AUDIENCE": JWT_AUDIENCE,
    "ISSUER": JWT_ISSUER,
    "AUTH_HEADER_TYPES": ("Bearer",),
    "UPDATE_LAST_LOGIN": True,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Multi-tenant AI chat platform",
    "DESCRIPTION": "Tenants, identity, conversations and the LLM gateway.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
}

# API keys: how long a key lives when its creator does not say, and the longest allowed.
API_KEY_DEFAULT_TTL_DAYS = envint("API_KEY_DEFAULT_TTL_DAYS", 90)
API_KEY_MAX_TTL_DAYS = envint("API_KEY_MAX_TTL_DAYS", 365)

# Defaults for new tenants (the seed's names).
RATE_LIMIT_REQUESTS_PER_MINUTE = envint("RATE_LIMIT_REQUESTS_PER_MINUTE", 60)
RATE_LIMIT_TOKENS_PER_MINUTE = envint("RATE_LIMIT_TOKENS_PER_MINUTE", 100_000)
DEFAULT_MODEL = envstr("DEFAULT_MODEL", "smollm2-135m")
DEFAULT_FALLBACK_MODEL = envstr("DEFAULT_FALLBACK_MODEL", "")
CACHE_TTL_SECONDS = envint("CACHE_TTL_SECONDS", 86_400)
REQUEST_TIMEOUT_SECONDS = envfloat("REQUEST_TIMEOUT_SECONDS", 60.0)
CIRCUIT_BREAKER_THRESHOLD = envint("CIRCUIT_BREAKER_THRESHOLD", 5)
CIRCUIT_BREAKER_COOLDOWN_SECONDS = envfloat("CIRCUIT_BREAKER_COOLDOWN_SECONDS", 30.0)
TENANT_MAX_CONCURRENT_REQUESTS = envint("TENANT_MAX_CONCURRENT_REQUESTS", 20)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    # json (config/logging.py: request id, trace id, tenant on every line) or text, for a terminal.
    "formatters": {
        "json": {"()": "config.logging.JsonFormatter"},
        "text": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s %(trace_id)s] %(message)s"},
    },
    "filters": {"context": {"()": "config.logging.ContextFilter"}},
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": envstr("LOG_FORMAT", "json"),
            "filters": ["context"],
        }
    },
    "root": {"handlers": ["console"], "level": envstr("LOG_LEVEL", "INFO")},
    # The SDKs log every HTTP request at INFO: noise, and measurable cost on the hot path.
    "loggers": {
        name: {"level": "WARNING"}
        for name in ("django.db.backends", "httpx", "httpx2", "openai", "anthropic", "daphne.server")
    },
}

# --- cache ---
# The semantic cache (routing/cache). Per-tenant switches, thresholds and TTLs live on Tenant;
# these are the process-wide knobs. See docs/semantic-cache.md for how the defaults were measured.
# New tenants' semantic threshold (cosine). The seed's 0.85 served wrong answers to about 4 percent
# of Quora's look-alike pairs even with the guards; 0.93 keeps that under 2 percent (measured in
# benchmarks/cache_eval.py, docs/semantic-cache.md). Supersedes the 0.85 default above.
SEMANTIC_CACHE_THRESHOLD = envfloat("SEMANTIC_CACHE_THRESHOLD", 0.93)
# local: all-MiniLM-L6-v2 int8 ONNX in-process; api: an OpenAI-compatible /embeddings endpoint.
CACHE_EMBEDDING_BACKEND = envstr("CACHE_EMBEDDING_BACKEND", "local")
CACHE_EMBEDDING_THREADS = envint("CACHE_EMBEDDING_THREADS", 1)
CACHE_EMBEDDING_API_MODEL = envstr("CACHE_EMBEDDING_API_MODEL", "text-embedding-3-small")
CACHE_EMBEDDING_API_BASE_URL = envstr("CACHE_EMBEDDING_API_BASE_URL", "https://api.openai.com/v1")
CACHE_EMBEDDING_API_KEY = envsecret("CACHE_EMBEDDING_API_KEY", "")
# Entries in each process' exact-match LRU (in front of Redis).
CACHE_EXACT_LRU_SIZE = envint("CACHE_EXACT_LRU_SIZE", 10_000)
# Nearest neighbours the HNSW search returns for the verifier to check.
CACHE_SEMANTIC_CANDIDATES = envint("CACHE_SEMANTIC_CANDIDATES", 4)
# The lexical near-miss guards (routing/cache/guards.py); off only to measure what they buy.
CACHE_NEAR_MISS_GUARDS = envbool("CACHE_NEAR_MISS_GUARDS", True)
# The near-miss verifier: every content word of one query needs a counterpart at least this
# close (contextual word vectors) in the other; 0 turns the check off.
CACHE_ALIGNMENT_FLOOR = envfloat("CACHE_ALIGNMENT_FLOOR", 0.5)
# Answers longer than this (characters) are not cached.
CACHE_MAX_ANSWER_CHARS = envint("CACHE_MAX_ANSWER_CHARS", 32_000)
# Warming refreshes popular entries that expire within this many seconds (each tenant sets its
# own budget in its admin: routing.CacheSettings).
CACHE_WARM_WINDOW_SECONDS = envint("CACHE_WARM_WINDOW_SECONDS", 3600)

# --- billing ---------------------------------------------------------------------------------
# Admission (billing/admission.py), metering rollups, invoices and the audit trail. docs/billing.md
# explains each choice; `.env.example` lists the variables.
from celery.schedules import crontab  # noqa: E402

# The Redis that holds the shared token buckets and quota counters (default: REDIS_URL).
ADMISSION_REDIS_URL = envstr("ADMISSION_REDIS_URL", REDIS_URL)
# Seconds to wait for that Redis before treating it as down (it answers in well under 1 ms).
ADMISSION_REDIS_TIMEOUT_SECONDS = envfloat("ADMISSION_REDIS_TIMEOUT_SECONDS", 0.5)
# When it is down: "open" admits against per-process buckets and database quota totals;
# "closed" refuses every request with 503 until it is back.
ADMISSION_REDIS_FAILURE_MODE = envstr("ADMISSION_REDIS_FAILURE_MODE", "open")
if ADMISSION_REDIS_FAILURE_MODE not in {"open", "closed"}:
    raise ImproperlyConfigured("ADMISSION_REDIS_FAILURE_MODE must be 'open' or 'closed'")
# After a failure, how long a process goes without asking Redis before trying again.
ADMISSION_REDIS_RETRY_SECONDS = envfloat("ADMISSION_REDIS_RETRY_SECONDS", 5.0)
# In "open" mode each process enforces this share of every limit (1/replicas keeps the total).
ADMISSION_LOCAL_LIMIT_SHARE = envfloat("ADMISSION_LOCAL_LIMIT_SHARE", 1.0)
# A reservation whose process died without settling is dropped after this many seconds.
ADMISSION_RESERVATION_TTL_SECONDS = envint("ADMISSION_RESERVATION_TTL_SECONDS", 600)
# The tenant admin is warned (audit event, x-quota-warning header) from this share of a quota.
QUOTA_WARNING_PERCENT = envint("QUOTA_WARNING_PERCENT", 80)

# Raw usage rows are kept this long (rollups forever).
USAGE_RAW_RETENTION_DAYS = envint("USAGE_RAW_RETENTION_DAYS", 90)
USAGE_ROLLUP_INTERVAL_SECONDS = envint("USAGE_ROLLUP_INTERVAL_SECONDS", 300)
# Rows newer than this are left to the next rollup, so a transaction still committing is not missed.
USAGE_ROLLUP_GRACE_SECONDS = envint("USAGE_ROLLUP_GRACE_SECONDS", 120)
# A Postgres role without BYPASSRLS that report queries run as (SET LOCAL ROLE), so row-level
# security applies even when the application connects as a superuser.
BILLING_REPORTING_DB_ROLE = envstr("BILLING_REPORTING_DB_ROLE", "gw_reporting")

# Invoices go to this URL as JSON, signed with HMAC-SHA256 of "<timestamp>.<body>" (empty: not sent).
INVOICE_WEBHOOK_URL = envstr("INVOICE_WEBHOOK_URL", "")
INVOICE_WEBHOOK_SECRET = envsecret("INVOICE_WEBHOOK_SECRET", "")
INVOICE_WEBHOOK_TIMEOUT_SECONDS = envfloat("INVOICE_WEBHOOK_TIMEOUT_SECONDS", 10.0)

CELERY_BEAT_SCHEDULE = {
    "billing-rollup-usage": {
        "task": "billing.tasks.rollup_all_tenants",
        "schedule": float(USAGE_ROLLUP_INTERVAL_SECONDS),
    },
    "billing-purge-raw-usage": {
        "task": "billing.tasks.purge_all_tenants",
        "schedule": crontab(hour=3, minute=30),
    },
    "billing-monthly-invoices": {
        "task": "billing.tasks.issue_monthly_invoices",
        "schedule": crontab(day_of_month=1, hour=2, minute=0),
    },
}
# Cache warming (routing/tasks.py): every tenant with warming on refreshes its popular answers
# that expire within CACHE_WARM_WINDOW_SECONDS, within its own daily budget. Runs several times
# per window, so an entry is refreshed before it expires.
CACHE_WARM_INTERVAL_SECONDS = envint("CACHE_WARM_INTERVAL_SECONDS", 600)
CELERY_BEAT_SCHEDULE["routing-cache-warm"] = {
    "task": "routing.tasks.warm_all_tenants",
    "schedule": float(CACHE_WARM_INTERVAL_SECONDS),
}
# --- end billing -----------------------------------------------------------------------------

# --- chat UI ---------------------------------------------------------------------------------
# Server-rendered pages on each tenant's host (chat/views.py, chat/ui_auth.py; docs/ui.md).
LOGIN_URL = "/login"
LOGIN_REDIRECT_URL = "/"
# Sign-in lockout: after this many failed sign-ins for one email in one tenant, each within
# LOGIN_LOCKOUT_SECONDS of the previous, the email is locked for LOGIN_LOCKOUT_SECONDS.
LOGIN_MAX_FAILURES = envint("LOGIN_MAX_FAILURES", 5)
LOGIN_LOCKOUT_SECONDS = envint("LOGIN_LOCKOUT_SECONDS", 900)
# Sent on every HTML page (config/security.py): no inline script, nothing from other origins.
CONTENT_SECURITY_POLICY = envstr(
    "CONTENT_SECURITY_POLICY",
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self' ws: wss:; frame-ancestors 'none'; base-uri 'self'; form-action 'self'",
)
# Swagger UI is an inline script loading from a CDN: it gets no policy rather than a broken page.
CSP_EXEMPT_PATHS = envlist("CSP_EXEMPT_PATHS", "/api/docs/")
# The app server answers /static/ itself (chat/urls_ui.py) outside production, also with DEBUG
# off (the live test server); in production a web server or CDN does.
SERVE_STATIC_FILES = envbool("SERVE_STATIC_FILES", PLATFORM_ENV != "production")
# --- end chat UI -----------------------------------------------------------------------------

# --- observability ---------------------------------------------------------------------------
# Metrics (config/metrics.py), traces (config/tracing.py) and JSON logs (config/logging.py);
# docs/operations.md explains each. Tracing itself reads the standard OTEL_* variables.
# After the request id is known, before anything that might log: x-trace-id and the log context.
MIDDLEWARE.insert(
    MIDDLEWARE.index("config.middleware.RequestIdMiddleware") + 1, "config.tracing.TraceIdMiddleware"
)
# When set, /metrics answers only `Authorization: Bearer <token>` (it lists every tenant's usage).
METRICS_BEARER_TOKEN = envsecret("METRICS_BEARER_TOKEN", "")
# Celery would replace the root logger's handlers with its own text format.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# Graceful shutdown (config/health.py): seconds between SIGTERM and the process exiting, during
# which /readyz answers 503 (the load balancer stops sending) and answers in flight finish.
SHUTDOWN_GRACE_SECONDS = envfloat("SHUTDOWN_GRACE_SECONDS", 25.0)
# --- end observability -----------------------------------------------------------------------
