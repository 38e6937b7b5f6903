"""Which models to try for a request, in order, and why.

The first candidate: the request's (or conversation's) model, else the tenant's primary. Then the
fallback chain: the request's `fallback_model`, the tenant's fallbacks, the platform default.
The `cost` and `latency` strategies reorder the candidates of the primary's quality tier.
Models the tenant does not allow, unknown ones, and ones that cannot do what the request needs
(tools, images, a JSON schema) are dropped, each with a reason kept for the trace.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.conf import settings

from config.errors import ApiError
from routing.catalog import catalog_target, catalog_targets
from routing.latency import ttft_by_model
from routing.types import ChatRequest, ModelTarget
from tenants.models import RoutingStrategy, Tenant


@dataclass
class RoutePlan:
    targets: list[ModelTarget]
    reasons: list[str] = field(default_factory=list)


def unsupported_reason(target: ModelTarget, request: ChatRequest) -> str | None:
    if request.tools and not target.supports_tools:
        return "no tool calling"
    if request.has_images() and not target.supports_vision:
        return "no image input"
    if (
        request.response_format
        and request.response_format.type == "json_schema"
        and not target.supports_json_schema
    ):
        return "no JSON schema output"
    if request.logprobs and not target.supports_logprobs:
        return "no logprobs"
    return None


def _chain(tenant: Tenant, requested: str | None, fallback: str | None) -> list[str]:
    names = [requested or tenant.primary_model]
    if fallback:
        names.append(fallback)
    names.extend(tenant.fallback_models or [])
    if settings.DEFAULT_FALLBACK_MODEL:
        names.append(settings.DEFAULT_FALLBACK_MODEL)
    return list(dict.fromkeys(n for n in names if n))


def check_model_allowed(tenant: Tenant, model: str) -> ModelTarget:
    """The catalog entry for a model a client named explicitly, or the error it deserves."""
    target = catalog_target(model)
    if target is None:
        raise ApiError(
            404, f"The model '{model}' does not exist or is not enabled", "model_not_found", param="model"
        )
    if not tenant.allows_model(model):
        raise ApiError(
            403, f"The model '{model}' is not allowed for this tenant", "model_not_allowed", param="model"
        )
    return target


async def plan_route(
    tenant: Tenant, request: ChatRequest, requested: str | None = None, fallback: str | None = None
) -> RoutePlan:
    if requested:
        check_model_allowed(tenant, requested)
    plan = RoutePlan(targets=[])
    for name in _chain(tenant, requested, fallback):
        target = catalog_target(name)
        if target is None:
            plan.reasons.append(f"{name}: not in the catalog")
        elif not tenant.allows_model(name):
            plan.reasons.append(f"{name}: not allowed for the tenant")
        elif reason := unsupported_reason(target, request):
            plan.reasons.append(f"{name}: {reason}")
        else:
            plan.targets.append(target)
    if not requested and tenant.routing_strategy != RoutingStrategy.PREFERENCE:
        await _apply_strategy(tenant, request, plan)
    if not plan.targets:
        raise ApiError(
            400,
            "No allowed model can serve this request (" + "; ".join(plan.reasons) + ")",
            "no_model_available",
            param="model",
        )
    return plan


async def _apply_strategy(tenant: Tenant, request: ChatRequest, plan: RoutePlan) -> None:
    """Puts the cheapest (or fastest) allowed model of the primary's tier first."""
    tier = plan.targets[0].quality_tier if plan.targets else 1
    pool = [
        t
        for t in catalog_targets().values()
        if t.quality_tier == tier and tenant.allows_model(t.name) and unsupported_reason(t, request) is None
    ]
    if not pool:
        return
    if tenant.routing_strategy == RoutingStrategy.COST:
        best = min(pool, key=lambda t: (t.input_price_per_mtok + t.output_price_per_mtok, t.name))
        why = "cheapest"
    else:
        ttft = await ttft_by_model([t.name for t in pool])
        # Models never measured go last among equals, so they are tried when others are slow.
        best = min(pool, key=lambda t: (ttft.get(t.name, float("inf")), t.name))
        why = "lowest recent time to first token"
    plan.targets = [best, *[t for t in plan.targets if t.name != best.name]]
    plan.reasons.append(f"{best.name}: first by strategy {tenant.routing_strategy} ({why})")
