"""Model backends, each a Beam RunInference ``ModelHandler`` with one contract.

Element: anything with ``.request: agents.model_io.ModelRequest`` (e.g.
``agents.model_io.ModelCall``) or a bare ``ModelRequest``. Result:
``PredictionResult(example=<the element>, inference=<agents.model_io.ModelResponse>)``,
exactly one per element, in input order.

Which backends exist, what each needs and how it calls tools is declared once, in
``agents.backends.registry`` (``REGISTRY``); ``make_handler(name, **options)``
builds one from pipeline option names (``model_max_tokens=...``, ``gemini_model=...``).
"""

from agents.backends.registry import REGISTRY, Backend, get, make_handler

__all__ = ["REGISTRY", "Backend", "get", "make_handler"]
