"""Ids derived from row ids: whoever knows a job or an item can reach its workflow, and an item's
conversation has one id whichever run of the item writes it."""

import uuid

# Fixed for good: changing it would give the conversations of retried items new ids.
_CONVERSATION_NAMESPACE = uuid.UUID("5f0c7a52-2f7e-4c55-9d43-2a1b8e0f6c31")


def job_workflow_id(job_id: object) -> str:
    return f"batch-job-{job_id}"


def item_workflow_id(item_id: object) -> str:
    return f"batch-item-{item_id}"


def message_batches_workflow_id(job_id: object) -> str:
    """The workflow that submits and polls a batch-mode job's Anthropic Message Batches."""
    return f"message-batches-{job_id}"


def item_conversation_id(item_id: uuid.UUID) -> uuid.UUID:
    """The conversation an item produces: every run and retry of the item stores under the same
    keys, so none leaves a second copy behind."""
    return uuid.uuid5(_CONVERSATION_NAMESPACE, str(item_id))
