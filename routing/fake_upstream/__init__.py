"""A fake LLM provider speaking the OpenAI, Anthropic and Ollama wire protocols, for tests and benchmarks.

Start it with `python manage.py fake_upstream --port 9100`, `python -m routing.fake_upstream`, or from
Python with `start_in_thread()` / `run_in_thread()`. See `server.py` for the control endpoints,
`knobs.py` for the knobs and `generation.py` for how replies and token counts are made.
"""

from routing.fake_upstream.knobs import DEFAULT_KNOBS, KnobError, Knobs, UpstreamState
from routing.fake_upstream.server import RunningUpstream, build_app, run_in_thread, start_in_thread

__all__ = [
    "DEFAULT_KNOBS",
    "KnobError",
    "Knobs",
    "RunningUpstream",
    "UpstreamState",
    "build_app",
    "run_in_thread",
    "start_in_thread",
]
