"""Where the repository is: the one lookup every module, script, benchmark and test uses."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def repo_root(*, env: bool = True) -> Path:
    """$MYCOLENS_ROOT (if `env`), else the checkout of the running scripts/ or benchmarks/ file, else this source's."""
    if env and os.environ.get("MYCOLENS_ROOT"):
        return Path(os.environ["MYCOLENS_ROOT"]).resolve()
    script = Path(sys.argv[0]).resolve() if sys.argv and sys.argv[0] else None
    if script is not None and script.parent.name in ("scripts", "benchmarks") and (script.parents[1] / "conf").is_dir():
        return script.parents[1]
    return Path(__file__).resolve().parents[3]  # src/mycolens/utils/paths.py: an editable install's checkout
