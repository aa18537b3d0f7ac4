"""One export of a training set, id `export-{export_id}`: plans the selection, writes it page by
page (progress as a query, one activity per page so memory and history stay small), then joins
the pages into the dataset directory and records the export."""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.errors import EXPORT_FAILED
    from activities.export import ExportActivities
    from models.enums import ExportStatus
    from models.messages import (
        ExportFailure,
        ExportFinishInput,
        ExportInput,
        ExportPageInput,
        ExportProgress,
        ExportResult,
        ProviderCount,
        add_provider_counts,
    )
    from workflows.config import DATA_STEP, EXPORT_STEP
    from workflows.step_failures import failure_message


def export_workflow_id(export_id: object) -> str:
    return f"export-{export_id}"


@workflow.defn(name="ExportWorkflow")
class ExportWorkflow:
    @workflow.init
    def __init__(self, request: ExportInput) -> None:
        self._progress = ExportProgress(export_id=request.export_id, status=ExportStatus.RUNNING, total=0, written=0)

    @workflow.run
    async def run(self, request: ExportInput) -> ExportResult:
        try:
            result = await self._export(request)
        except ActivityError as error:
            message = failure_message(error)
            self._progress.status = ExportStatus.FAILED
            await workflow.execute_activity_method(
                ExportActivities.fail_export,
                ExportFailure(export_id=request.export_id, message=message, location=request.location),
                **DATA_STEP,
            )
            raise ApplicationError(f"export {request.export_id} failed: {message}", type=EXPORT_FAILED, non_retryable=True) from error
        self._progress.status = ExportStatus.COMPLETED
        return result

    async def _export(self, request: ExportInput) -> ExportResult:
        plan = await workflow.execute_activity_method(ExportActivities.plan_export, request, **DATA_STEP)
        self._progress.total = plan.total
        page, after = 0, None
        # Who wrote what the pages wrote (None once a page, written by older code, did not say).
        sources: list[ProviderCount] | None = []
        while True:
            written = await workflow.execute_activity_method(
                ExportActivities.write_export_page,
                ExportPageInput(export=request, plan=plan, page=page, first_position=self._progress.written, after=after),
                **EXPORT_STEP,
            )
            if not written.count:
                break
            self._progress.written += written.count
            page, after = page + 1, written.last
            sources = None if sources is None or written.sources is None else add_provider_counts(sources, written.sources)
            workflow.set_current_details(f"written {self._progress.written} of {plan.total} conversations")
        return await workflow.execute_activity_method(
            ExportActivities.finish_export,
            ExportFinishInput(export=request, plan=plan, pages=page, sources=sources),
            **EXPORT_STEP,
        )

    @workflow.query
    def progress(self) -> ExportProgress:
        return self._progress
