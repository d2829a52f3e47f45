"""The Ray Serve application of mycolens (serve/app.py) and its Serve config (serve/config.yaml)."""
