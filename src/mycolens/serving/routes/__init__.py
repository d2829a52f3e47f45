"""The ingress's routes, one module per concern; mycolens.serving.api.build_api assembles them into the app.

No `from __future__ import annotations` here: FastAPI reads the route functions' annotations, some of which name
the builder's arguments (e.g. Query(le=lim.max_top_k)).
"""
