"""Circuit breaker and bulkhead state lives in Redis, so every process shares it."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from pathlib import Path

from routing.bulkhead import Bulkhead, bulkhead_in_flight
from routing.circuit import CircuitBreaker

ROOT = Path(__file__).resolve().parents[2]


def _name() -> str:
    return "test-" + uuid.uuid4().hex[:8]


async def test_opens_after_threshold_and_recovers_through_a_single_probe() -> None:
    breaker = CircuitBreaker(threshold=3, cooldown=0.2)
    provider, model = _name(), "m"
    assert await breaker.allow(provider, model)
    for expected in ("closed", "closed", "open"):
        assert await breaker.record_failure(provider, model) == expected
    assert not await breaker.allow(provider, model)
    await asyncio.sleep(0.25)
    # After the cool-down exactly one caller gets the probe.
    results = await asyncio.gather(*(breaker.allow(provider, model) for _ in range(5)))
    assert sorted(bool(r) for r in results) == [False, False, False, False, True]
    assert await breaker.state(provider, model) == "half_open"
    assert await breaker.record_success(provider, model) == "closed"
    assert await breaker.allow(provider, model)


async def test_failed_probe_reopens() -> None:
    breaker = CircuitBreaker(threshold=1, cooldown=0.1)
    provider = _name()
    await breaker.record_failure(provider, "m")
    await asyncio.sleep(0.15)
    assert await breaker.allow(provider, "m")
    assert await breaker.record_failure(provider, "m") == "open"
    assert not await breaker.allow(provider, "m")


async def test_success_resets_the_failure_count() -> None:
    breaker = CircuitBreaker(threshold=2, cooldown=10)
    provider = _name()
    assert await breaker.allow(provider, "m") == 1  # clean: no need to report success
    await breaker.record_failure(provider, "m")
    assert await breaker.allow(provider, "m") == 2  # a failure counted: report the success
    await breaker.record_success(provider, "m")
    assert await breaker.allow(provider, "m") == 1
    assert await breaker.record_failure(provider, "m") == "closed"


async def test_bulkhead_caps_concurrency_and_releases() -> None:
    tenant = _name()
    holders = [Bulkhead(tenant, cap=2, hold_seconds=30) for _ in range(3)]
    assert [await h.acquire() for h in holders] == [True, True, False]
    assert await bulkhead_in_flight(tenant) == 2
    await holders[0].release()
    assert await holders[2].acquire()


async def test_bulkhead_slot_of_a_dead_process_expires() -> None:
    tenant = _name()
    assert await Bulkhead(tenant, cap=1, hold_seconds=0.1).acquire()
    assert not await Bulkhead(tenant, cap=1, hold_seconds=30).acquire()
    await asyncio.sleep(0.15)
    assert await Bulkhead(tenant, cap=1, hold_seconds=30).acquire()


CHILD = """
import asyncio, sys, django
django.setup()
from routing.circuit import CircuitBreaker
from routing.bulkhead import Bulkhead

async def main(action, name):
    if action == "fail":
        print(await CircuitBreaker(threshold=2, cooldown=60).record_failure(name, "m"))
    elif action == "allow":
        print(bool(await CircuitBreaker(threshold=2, cooldown=60).allow(name, "m")))
    elif action == "hold":
        print(await Bulkhead(name, cap=1, hold_seconds=60).acquire())

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


def _child(action: str, name: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", CHILD, action, name],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "DJANGO_SETTINGS_MODULE": "config.settings", "PLATFORM_ENV": "test"},
        check=True,
    )
    return result.stdout.strip()


def test_two_processes_share_one_circuit_and_one_bulkhead() -> None:
    name = _name()
    assert _child("fail", name) == "closed"
    assert _child("fail", name) == "open"  # the second process sees the first one's failure
    assert _child("allow", name) == "False"
    assert _child("hold", name) == "True"
    assert _child("hold", name) == "False"  # the first process' slot counts in the second
