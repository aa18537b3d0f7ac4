"""Workflow ids, derived from row ids: whoever knows a job or an item can reach its workflow."""


def job_workflow_id(job_id: object) -> str:
    return f"batch-job-{job_id}"


def item_workflow_id(item_id: object) -> str:
    return f"batch-item-{item_id}"


def message_batches_workflow_id(job_id: object) -> str:
    """The workflow that submits and polls a batch-mode job's Anthropic Message Batches."""
    return f"message-batches-{job_id}"
