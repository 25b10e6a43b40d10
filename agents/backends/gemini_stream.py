"""Gemini's streaming call for text steps: ``models.generate_content_stream`` (``:streamGenerateContent?alt=sse``).

Each chunk's text parts are fed to the step's ``TextSink`` as they arrive; the first chunk with a
function call halts the sink (a tool step never streams, and what it already showed is retracted by
the pipeline). The chunks are merged back into one ``GenerateContentResponse`` so the rest of the
backend (``gemini_convert.to_model_response``) reads a streamed answer exactly like a whole one.

A stream that breaks after some text was fed halts the sink before the error goes to the retry
policy: a retried attempt is answered whole, and the final reply replaces what was shown.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from agents.streaming import TextSink


def merge_chunks(chunks: Iterable[Any]) -> Any:
    """One ``GenerateContentResponse`` from a stream's chunks: all parts in order (adjacent text joined),
    the last finish reason, usage and prompt feedback seen."""
    from google.genai import types

    parts: list[types.Part] = []
    last: Any = None
    finish: Any = None
    usage: Any = None
    feedback: Any = None
    role = "model"
    for chunk in chunks:
        last = chunk
        usage = chunk.usage_metadata or usage
        feedback = chunk.prompt_feedback or feedback
        for candidate in (chunk.candidates or ())[:1]:
            finish = candidate.finish_reason or finish
            if candidate.content is None:
                continue
            role = candidate.content.role or role
            for part in candidate.content.parts or ():
                if part.text is not None and not part.thought and not part.function_call and parts:
                    prev = parts[-1]
                    if prev.text is not None and not prev.thought and not prev.function_call:
                        parts[-1] = types.Part(text=prev.text + part.text)
                        continue
                parts.append(part)
    if last is None:
        return types.GenerateContentResponse(candidates=[])
    if not parts and finish is None:
        return types.GenerateContentResponse(candidates=[], usage_metadata=usage, prompt_feedback=feedback)
    candidate = types.Candidate(content=types.Content(role=role, parts=parts), finish_reason=finish, index=0)
    return types.GenerateContentResponse(
        candidates=[candidate],
        usage_metadata=usage,
        prompt_feedback=feedback,
        model_version=last.model_version,
        response_id=last.response_id,
    )


def stream_content(client: Any, model: str, contents: list[Any], config: Any, sink: TextSink) -> Any:
    """One streaming attempt: feeds ``sink`` while reading, returns the merged response."""
    chunks = []
    try:
        for chunk in client.models.generate_content_stream(model=model, contents=contents, config=config):
            chunks.append(chunk)
            for candidate in (chunk.candidates or ())[:1]:
                for part in (candidate.content.parts if candidate.content else None) or ():
                    if part.function_call:
                        sink.halt()
                    elif part.text and not part.thought:
                        sink.feed(part.text)
    except BaseException:
        if chunks:
            sink.halt()  # a broken stream: a retry answers whole, the final reply replaces what was shown
        raise
    return merge_chunks(chunks)
