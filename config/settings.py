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
]
INSTALLED_APPS = list(SHARED_APPS) + [app for app in TENANT_APPS if app not in SHARED_APPS]

TENANT_MODEL = "tenants.Tenant"
TENANT_DOMAIN_MODEL = "tenants.Domain"
DATABASE_ROUTERS = ("django_tenants.routers.TenantSyncRouter",)
PUBLIC_SCHEMA_NAME = "public"

MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "config.middleware.RequestIdMiddleware",
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
        conn_max_age=envint("DB_CONN_MAX_AGE", 60),
        conn_health_checks=True,
    )
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = envstr("REDIS_URL", "redis://127.0.0.1:6379/0")
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
SEMANTIC_CACHE_THRESHOLD = envfloat("SEMANTIC_CACHE_THRESHOLD", 0.85)
CACHE_TTL_SECONDS = envint("CACHE_TTL_SECONDS", 86_400)
REQUEST_TIMEOUT_SECONDS = envfloat("REQUEST_TIMEOUT_SECONDS", 60.0)
CIRCUIT_BREAKER_THRESHOLD = envint("CIRCUIT_BREAKER_THRESHOLD", 5)
CIRCUIT_BREAKER_COOLDOWN_SECONDS = envfloat("CIRCUIT_BREAKER_COOLDOWN_SECONDS", 30.0)
TENANT_MAX_CONCURRENT_REQUESTS = envint("TENANT_MAX_CONCURRENT_REQUESTS", 20)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": envstr("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
