"""Child of test_memory: train one epoch on the shards given, print the process's peak RSS (MB) as a JSON line."""

from __future__ import annotations

import json
import resource
import sys
from pathlib import Path

from mycolens.training.run import train
from tests.conftest import compose

if __name__ == "__main__":
    shards, out, *overrides = sys.argv[1:]
    cfg = compose(
        [
            f"paths.shards_dir={shards}",
            f"paths.models_dir={out}/models",
            f"paths.reports_dir={out}/reports",
            f"paths.log_dir={out}/logs",
            "trainer.max_epochs=1",
            "test=false",
            "data.outliers.images=0",
            *overrides,
        ],
        Path(out),
    )
    train(cfg, publish=False)
    print(json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
