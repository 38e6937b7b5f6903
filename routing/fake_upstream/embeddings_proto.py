"""OpenAI-shaped embeddings (`POST /v1/embeddings`): deterministic bag-of-words vectors, see generation.embed."""

from __future__ import annotations

from aiohttp import web

from routing.fake_upstream import generation as gen
from routing.fake_upstream.openai_proto import error_response, knob_failure
from routing.fake_upstream.serving import (
    admit,
    count_error,
    drop_connection,
    json_response,
    read_json_object,
    wait_ms,
)


async def embeddings(request: web.Request, provider: str = "openai") -> web.Response:
    body = await read_json_object(request)
    if body is None:
        return error_response(400, "We could not parse the JSON body of your request.")
    if not request.headers.get("Authorization"):
        return error_response(401, "You didn't provide an API key.")
    model = body.get("model")
    raw = body.get("input")
    if not isinstance(model, str) or not model:
        return error_response(400, "you must provide a model parameter", "model")
    inputs = (
        [raw] if isinstance(raw, str) or (isinstance(raw, list) and raw and isinstance(raw[0], int)) else raw
    )
    if not isinstance(inputs, list) or not inputs:
        count_error(request, provider, model)
        return error_response(400, "'input' must be a non-empty string or array.", "input")
    knobs, failure = admit(request, provider, model, body, False)
    if failure is not None:
        return await knob_failure(knobs, failure)
    dim = body.get("dimensions") or knobs.embedding_dim
    fmt = body.get("encoding_format") or "float"
    data, tokens = [], 0
    for index, item in enumerate(inputs):
        text = " ".join(map(str, item)) if isinstance(item, list) else str(item)
        tokens += len(item) if isinstance(item, list) else gen.count_words(text)
        vector = gen.encode_embedding(gen.embed(text, dim), fmt)
        data.append({"object": "embedding", "index": index, "embedding": vector})
    await wait_ms(knobs.latency_ms)
    if knobs.disconnect_after_tokens is not None:
        return drop_connection(request, provider, model)
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    return json_response({"object": "list", "data": data, "model": model, "usage": usage})
