"""The safety rule and how it is measured: calibrated probabilities and OOD signals to a verdict (`rule`),
temperature scaling and the energy score (`calibration`), and the metrics every stage reports (`metrics`).
Everything above it (models, inference, export, evaluation, serving) uses this one rule."""
