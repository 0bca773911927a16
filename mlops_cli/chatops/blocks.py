"""The Block Kit the service reads and writes: the approval message's action ids (the pipeline's contract,
docs/chatops.md), the rollback confirmation, and the decided approval."""

from __future__ import annotations

import json
import uuid
from typing import Any

APPROVAL_BLOCK = "mlops_approval"
APPROVE, REJECT = "mlops_approve", "mlops_reject"
ROLLBACK_CONFIRM, ROLLBACK_CANCEL = "mlops_rollback_confirm", "mlops_rollback_cancel"


def decided_blocks(message: dict[str, Any], line: str) -> list[dict[str, Any]]:
    """The approval message's blocks with its buttons replaced by who decided and when."""
    blocks = [
        b for b in message.get("blocks") or [] if b.get("block_id") != APPROVAL_BLOCK and b.get("type") != "actions"
    ]
    return blocks + [{"type": "context", "elements": [{"type": "mrkdwn", "text": line}]}]


def rollback_blocks(env: str, user: str) -> list[dict[str, Any]]:
    # the nonce makes the confirmation single-use: a double click (two trigger_ids) rolls back once
    value = json.dumps({"env": env, "asked_by": user, "nonce": uuid.uuid4().hex})
    return [
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": f":warning: Roll *{env}* back to its previous revision?"},
        },
        {
            "type": "actions",
            "block_id": "mlops_rollback",
            "elements": [
                {
                    "type": "button",
                    "action_id": ROLLBACK_CONFIRM,
                    "style": "danger",
                    "value": value,
                    "text": {"type": "plain_text", "text": f"Roll {env} back"},
                },
                {
                    "type": "button",
                    "action_id": ROLLBACK_CANCEL,
                    "value": value,
                    "text": {"type": "plain_text", "text": "Cancel"},
                },
            ],
        },
    ]
