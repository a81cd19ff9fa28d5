"""`secateurs serve`: an OpenAI-compatible HTTP server that aligns concurrent requests in one batch.

app.py (routes, disconnects, the bounded queue), protocol.py (OpenAI bodies -> prompt, method,
options), text.py (streamed text deltas, stop strings), responses.py (response bodies),
metrics.py (Prometheus), schema.py (the bodies in /openapi.json). Needs the `serve` extra: pip install 'secateurs[serve]'.
"""

from .app import ServeSettings, create_app, warm_up
from .protocol import ServeDefaults

__all__ = ["ServeDefaults", "ServeSettings", "create_app", "warm_up"]
