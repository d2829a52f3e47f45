"""Out-of-distribution scores that travel inside the exported graph, and the fitting of their thresholds."""
