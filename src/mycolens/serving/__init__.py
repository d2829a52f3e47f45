"""HTTP serving logic without Ray: settings, request parsing, errors, metrics, the v2 protocol, the FastAPI app.

serve/app.py wraps these in Ray Serve deployments; tests drive the same FastAPI app in-process.
"""
