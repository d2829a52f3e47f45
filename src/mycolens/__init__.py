"""mycolens: a mushroom photo in, a safe answer out, and the MLOps pipeline between."""

__version__ = "0.1.0"
