"""`status --json` keeps its keys now that job_status returns a model (JobStatusView), outages included."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from models.enums import JobStatus
from service.batches import JobStatusView
from service.outages import Outage

# What the workflow alone can tell while PostgreSQL is down: exactly the keys printed before.
WORKFLOW_ONLY_KEYS = [
    "job_id", "workflow_id", "status", "total", "completed", "successful", "failed", "cancelled", "in_flight",
    "remaining", "enriched", "elapsed_s", "eta_seconds", "input_tokens", "output_tokens", "cost_usd", "started_at",
    "completed_at", "waiting_on", "database_unavailable",
]


def test_the_view_without_the_database_prints_only_the_workflows_keys_and_iso_datetimes() -> None:
    started = datetime(2026, 12, 2, 3, 0, tzinfo=UTC)
    view = JobStatusView(
        job_id=uuid.UUID(int=1), workflow_id="batch-job-1", status=JobStatus.PROCESSING, total=4, completed=1,
        successful=1, failed=0, cancelled=0, in_flight=2, remaining=3, enriched=None, elapsed_s=5.0, eta_seconds=None,
        input_tokens=10, output_tokens=20, cost_usd=0.001, started_at=started, completed_at=None, waiting_on=None,
        database_unavailable="PostgreSQL unavailable: connection refused",
    )

    printed = view.as_json()

    assert sorted(printed) == sorted(WORKFLOW_ONLY_KEYS)
    assert (printed["status"], printed["started_at"]) == ("processing", started.isoformat())
    assert printed["job_id"] == str(uuid.UUID(int=1))


def test_an_outage_waited_on_prints_its_fields_and_its_summary() -> None:
    since = datetime(2026, 12, 2, 3, 0, tzinfo=UTC)
    outage = Outage(part="S3 storage", error_type="storage_unavailable", since=since, items=2, job_steps=["set_job_status"],
                    last_error="S3 storage unavailable: connection refused")
    view = JobStatusView(
        job_id=uuid.UUID(int=1), workflow_id="batch-job-1", status=JobStatus.PROCESSING, total=4, completed=1,
        successful=1, failed=0, cancelled=0, in_flight=2, remaining=3, enriched=None, elapsed_s=5.0, eta_seconds=None,
        input_tokens=10, output_tokens=20, cost_usd=0.001, started_at=since, completed_at=None, waiting_on=[outage],
    )

    [printed] = view.as_json()["waiting_on"]

    assert printed == {
        "part": "S3 storage", "error_type": "storage_unavailable", "since": "2026-12-02T03:00:00Z", "items": 2,
        "job_steps": ["set_job_status"], "last_error": "S3 storage unavailable: connection refused",
        "summary": f"waiting for S3 storage since {since.astimezone():%H:%M} (2 items; job step set_job_status): "
        "S3 storage unavailable: connection refused",
    }
