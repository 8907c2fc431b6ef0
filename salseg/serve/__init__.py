"""``salseg-serve``: an HTTP API (rembg-compatible ``POST /api/remove``) and a web page that run
the same :class:`~salseg.predict.predictor.Predictor` as ``salseg-predict``.

Modules: :mod:`.batching` (request queue and micro-batching onto one model copy),
:mod:`.outputs` (upload decoding and PNG rendering, shared pixel path with ``salseg-predict``),
:mod:`.app` (the FastAPI application); the console script is :mod:`salseg.cli.serve`.
See docs/serve.md.
"""
