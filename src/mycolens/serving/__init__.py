"""HTTP serving logic without Ray: settings, request parsing, errors, metrics, the v2 protocol, the FastAPI app.

The routes are in mycolens.serving.routes (one module per concern), assembled by api.build_api. serve/deployments.py
wraps these in Ray Serve deployments (serve/app.py builds the application); tests drive the same app in-process.
"""
