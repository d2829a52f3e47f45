"""Ray Tune sweeps: search spaces from conf/sweep, one Lightning fit per trial, the best config and checkpoint saved."""
