"""The Ray Serve application of mycolens (serve/app.py, built from serve/deployments.py, serve/config.py and
serve/reload.py) and its Serve config (serve/config.yaml)."""
