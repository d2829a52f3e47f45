"""The one failure handler at the edge: known errors become one clear line and a non-zero exit."""

from __future__ import annotations

import functools
import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[2]

log = logging.getLogger("mycolens")


class UserError(RuntimeError):
    """An error the user can fix (bad input, missing file); printed as one line, exit code 2."""


def quiet_environment() -> None:
    """No telemetry, no network waits: DVC analytics, Ray usage stats and W&B stay local."""
    os.environ.setdefault("MYCOLENS_ROOT", str(ROOT))
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("HYDRA_FULL_ERROR", "0")
    if not os.environ.get("WANDB_API_KEY"):
        os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")


def known_errors() -> tuple[type[BaseException], ...]:
    from mycolens.catalogue import CatalogueError
    from mycolens.data.shards import ShardsError

    return (UserError, CatalogueError, ShardsError, FileNotFoundError)


def task(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a stage's main: clear one-line errors for known failures, always say where outputs went."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except known_errors() as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)
        finally:
            logging.shutdown()

    return wrapper
