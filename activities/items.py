"""An item's data steps in two activities: one before its Claude call (begin, choose the template,
resolve the prompt) and one after it (validate and store the answer, link the conversation,
record the outcome and report it to the job). Each activity costs the item's history three
events and a workflow task, and the Temporal server its dispatch: seven steps as seven
activities cost as much as the rest of the item. Each step keeps its own retry-safe write, so a retried activity repeats none of them."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable
from typing import Protocol

from temporalio import activity
from temporalio.client import Client

from brightrun.logs import get_logger
from brightrun.temporal_client import signal_if_running
from models.enums import ItemStatus
from models.messages import (
    ITEM_FINISHED_SIGNAL,
    CompleteItemInput,
    FinishItemInput,
    ItemWork,
    LinkConversationInput,
    LinkedConversation,
    PreparedItem,
    PrepareItemInput,
    ResolvedPrompt,
    ResolvePromptInput,
    SelectedTemplate,
    SelectTemplateInput,
    StoreConversationInput,
    StoredConversation,
)

log = get_logger("items")


class ItemRowSteps(Protocol):
    def begin_item(self, item_id: uuid.UUID) -> Awaitable[ItemWork]: ...
    def link_conversation(self, request: LinkConversationInput) -> Awaitable[LinkedConversation]: ...
    def finish_item(self, request: FinishItemInput) -> Awaitable[ItemStatus]: ...


class PromptSteps(Protocol):
    def select_template(self, request: SelectTemplateInput) -> Awaitable[SelectedTemplate]: ...
    def resolve_template(self, request: ResolvePromptInput) -> Awaitable[ResolvedPrompt]: ...


class AnswerSteps(Protocol):
    def store_conversation(self, request: StoreConversationInput) -> Awaitable[StoredConversation]: ...


class ItemActivities:
    def __init__(self, rows: ItemRowSteps, prompts: PromptSteps, answers: AnswerSteps, temporal: Client) -> None:
        self._rows = rows
        self._prompts = prompts
        self._answers = answers
        self._temporal = temporal

    @activity.defn(name="prepare_item")
    async def prepare_item(self, request: PrepareItemInput) -> PreparedItem:
        work = await self._rows.begin_item(request.item_id)
        if work.recorded:
            return PreparedItem(work=work)
        selected = await self._prompts.select_template(work.template_choice())
        prompt = await self._prompts.resolve_template(
            work.prompt_request(selected.template_id, request.user_id, request.conversation_id)
        )
        return PreparedItem(work=work, prompt=prompt)

    @activity.defn(name="complete_item")
    async def complete_item(self, request: CompleteItemInput) -> ItemStatus:
        """Records the item completed and reports it to its job; returns the status the row ends
        with. An answer that fails validation raises before anything is written (the workflow
        may ask for a repair)."""
        outcome = request.outcome
        stored = await self._answers.store_conversation(
            StoreConversationInput(
                conversation_id=request.conversation_id,
                user_id=request.user_id,
                raw_key=request.generations[-1].raw_key,
                raw_digest=request.generations[-1].raw_digest,
                persona=request.prompt.persona_name,
                training_topic=request.prompt.topic_name,
            )
        )
        linked = await self._rows.link_conversation(
            LinkConversationInput(
                job_id=request.job_id,
                item_id=outcome.item_id,
                conversation_id=request.conversation_id,
                user_id=request.user_id,
                work=request.work,
                template_id=request.prompt.template_id,
                generations=request.generations,
                stored=stored,
            )
        )
        if linked.recorded is not None:
            # The row ended while this step ran: it keeps that outcome, which is what is reported.
            recorded = linked.recorded.status
            reported = outcome.model_copy(update=linked.recorded.model_dump(include={"status", "error_message", "error_type", "conversation_id"}))
        else:
            recorded = await self._rows.finish_item(
                FinishItemInput(
                    job_id=request.job_id, finished_at=request.finished_at, outcome=outcome, rate_limit=request.rate_limit
                )
            )
            # The job counts the status the row keeps (the first final one), and only its first
            # report of an item: a retried step may tell it again.
            reported = outcome.model_copy(update={"status": recorded})
        if request.report_to is None:
            return recorded  # the item reports once it has judged the conversation
        if not await signal_if_running(self._temporal, request.report_to, ITEM_FINISHED_SIGNAL, reported):
            # A reset or late run of the item: the job's counters come from the rows.
            log.warning("the job's workflow has ended; the item's row holds its outcome", job_workflow=request.report_to)
        return recorded
