"""Review feedback claims: `python scripts/review.py [action=list|approve|reject|export|purge] [claim=ID|claim=[ID,ID]]
[reviewer=NAME] [note=TEXT] [out=DIR] [status=pending|approved|rejected|used|all] [format=text|json]`.

The queue is `monitoring.feedback.dir` (POST /feedback fills it); every decision is appended to its
decisions.jsonl with the reviewer, the time and the note. A claim counts as approved once
`monitoring.feedback.reviewers_required` distinct reviewers approved it and none rejected it; only approved claims
reach `make retrain`. Exit code 0 on success, 2 on a usage error or a refused decision.
"""

import json

import hydra
from omegaconf import DictConfig

from mycolens.cli import quiet_environment, task

quiet_environment()

ACTIONS = ("list", "approve", "reject", "export", "purge")


@hydra.main(version_base="1.3", config_path="../conf", config_name="review")
@task
def main(cfg: DictConfig) -> None:
    from mycolens.cli import UserError
    from mycolens.monitoring import claims

    action = str(cfg.action)
    if action not in ACTIONS:
        raise UserError(f"action={action}: use one of {', '.join(ACTIONS)}")
    queue = str(cfg.monitoring.feedback.dir)
    required = int(cfg.monitoring.feedback.reviewers_required)
    try:
        if action == "list":
            status = None if str(cfg.status) == "all" else str(cfg.status)
            states = claims.claim_states(queue, required, status=status)
            if str(cfg.format) == "json":
                print(json.dumps([s.to_dict() for s in states], indent=2))
            elif str(cfg.format) == "text":
                print(render(states, required, queue))
            else:
                raise UserError(f"format={cfg.format}: use format=text or format=json")
        elif action in ("approve", "reject"):
            if not cfg.claim:
                raise UserError(f"give the claim: python scripts/review.py action={action} claim=<id> reviewer=<name>")
            if not cfg.reviewer:
                raise UserError(f"give your name: python scripts/review.py action={action} claim=<id> reviewer=<name>")
            # one id, or a batch as a list (claim=[id1,id2]): each decision is logged on its own
            ids = [str(cfg.claim)] if isinstance(cfg.claim, str) else [str(c) for c in cfg.claim]
            for claim_id in ids:
                state = claims.decide(
                    queue,
                    claim_id,
                    action,
                    str(cfg.reviewer),
                    note=str(cfg.note or ""),
                    via="cli",
                    reviewers_required=required,
                )
                print(
                    f"{state.claim.id}: {action}d by {cfg.reviewer}; status {state.status} "
                    f"({len(state.approved_by)}/{required} approvals, {len(state.rejected_by)} rejections)"
                )
        elif action == "export":
            if not cfg.out:
                raise UserError("give the folder: python scripts/review.py action=export out=DIR")
            manifest = claims.export_approved(queue, str(cfg.out), required)
            print(f"exported {len(manifest['claims'])} approved claims to {cfg.out} (manifest.json lists them)")
        else:
            removed = claims.purge_rejected(queue, required)
            print(f"purged {len(removed)} rejected claims from {queue}")
    except claims.FeedbackError as exc:
        raise UserError(f"{exc.code}: {exc}") from None


def render(states: list, required: int, queue: str) -> str:
    """One line a claim: id, status (approvals), claimed species, the model's answer, flags."""
    if not states:
        return f"no claims with this status in {queue}"
    lines = []
    for s in states:
        a = s.claim.answer or {}
        model = f"{a.get('species', '?')} {a.get('verdict', '?')} {float(a.get('confidence', 0)):.2f}" if a else "-"
        flags = " model_abstained" if s.claim.model_abstained else ""
        lines.append(
            f"{s.claim.id}  {s.status:<8} {len(s.approved_by)}/{required}  claimed {s.claim.species:<26} "
            f"model {model}{flags}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
