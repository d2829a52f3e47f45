"""Production monitoring: per-image statistics, a training-time reference, drift scores, and the feedback folder."""
