"""Review through the workspace over HTTP and its API, on the real stack: another user's
conversation is "not found", a decision made by API or page shows in the command line's view and
the other way round, the queue pages through conversations by keyset, and the judge's verdicts
show on the pages and filter the queue and its bulk decisions."""

from __future__ import annotations

import asyncio
import html
import io
import os
import re
import uuid
import zipfile
from datetime import UTC, datetime

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import async_sessionmaker

from brightrun.storage import Storage
from models.enums import ExportStatus, ReviewStatus
from models.tables import Export
from service import review, users
from service.access import Owner
from service.exports_view import ARCHIVE_READ_BYTES, ExportListing, export_archive
from tests.conversations import dialogue, new_conversation, new_job
from tests.test_judge_review import RUBRIC, judged
from tests.workspace import browser, new_user, page_token, sign_in


async def test_another_users_conversation_is_not_found_by_url_or_api(
    workspace_url: str, sessions: async_sessionmaker, storage: Storage
) -> None:
    lena, mike = await new_user(sessions, "lena"), await new_user(sessions, "mike")
    job = await new_job(sessions, lena.name)
    lenas = await new_conversation(sessions, storage, job, lena.name, dialogue("lena"))
    token = await users.new_api_token(sessions, mike.name)
    bearer = {"Authorization": f"Bearer {token}"}
    async with browser() as client:
        await sign_in(client, workspace_url, mike.name, mike.password)
        async with client.get(f"{workspace_url}/conversations/{lenas}") as page:
            assert page.status == 404
        async with client.get(f"{workspace_url}/review?job={job}") as queue:
            assert queue.status == 404
        csrf = await page_token(client, workspace_url)
        form = {"decision": "approved", "csrf_token": csrf}
        async with client.post(f"{workspace_url}/conversations/{lenas}/review", data=form) as refused:
            assert refused.status == 404
    async with browser() as script:
        async with script.get(f"{workspace_url}/api/conversations/{lenas}", headers=bearer) as shown:
            assert shown.status == 404 and await shown.json() == {"detail": f"conversation {lenas} not found"}
        decision = {"decision": "approved", "reason": None}
        async with script.post(f"{workspace_url}/api/conversations/{lenas}/review", json=decision, headers=bearer) as refused:
            assert refused.status == 404
    assert (await review.show_conversation(sessions, storage, Owner(lena.name), str(lenas)))["review_status"] == "pending_review"


async def test_a_decision_by_api_or_page_shows_in_the_cli_and_the_clis_on_the_page(
    workspace_url: str, sessions: async_sessionmaker, storage: Storage
) -> None:
    nina = await new_user(sessions, "nina")
    job = await new_job(sessions, nina.name)
    by_api, by_page, by_cli = [await new_conversation(sessions, storage, job, nina.name, dialogue(f"n{i}")) for i in range(3)]
    token = await users.new_api_token(sessions, nina.name)
    async with browser() as script:
        headers = {"Authorization": f"Bearer {token}"}
        decision = {"decision": "rejected", "reason": "off topic"}
        async with script.post(f"{workspace_url}/api/conversations/{by_api}/review", json=decision, headers=headers) as done:
            assert done.status == 200 and (await done.json())["changed"] == 1
        async with script.get(f"{workspace_url}/api/conversations/{by_api}", headers=headers) as shown:
            body = await shown.json()
        assert (body["review_status"], body["reviewed_by"], body["review_reason"]) == ("rejected", nina.name, "off topic")
        assert [(d["decision"], d["decided_by"]) for d in body["decisions"]] == [("rejected", nina.name)]
        async with script.post(
            f"{workspace_url}/api/conversations/{by_api}/review", json={"decision": "maybe"}, headers=headers
        ) as refused:
            assert refused.status == 400

    async with browser() as client:
        await sign_in(client, workspace_url, nina.name, nina.password)
        csrf = await page_token(client, workspace_url)
        form = {"decision": "approved", "reason": "", "csrf_token": csrf}
        async with client.post(f"{workspace_url}/conversations/{by_page}/review", data=form, allow_redirects=False) as done:
            assert done.status == 303 and done.headers["Location"] == f"/conversations/{by_page}"
        await review.review(sessions, Owner(nina.name), ReviewStatus.APPROVED, review.Selection((str(by_cli),)))
        async with client.get(f"{workspace_url}/conversations/{by_cli}") as page:
            assert f"approved by {nina.name}" in await page.text()

    listed = {row.conversation_id: row for row in await review.list_conversations(
        sessions, Owner(nina.name), review.Selection(job=str(job))
    )}
    assert {key: (row.review_status, row.reviewed_by) for key, row in listed.items()} == {
        by_api: (ReviewStatus.REJECTED, nina.name), by_page: (ReviewStatus.APPROVED, nina.name),
        by_cli: (ReviewStatus.APPROVED, nina.name),
    }


async def test_the_queue_pages_by_keyset_forward_and_back_within_its_filter(
    sessions: async_sessionmaker, storage: Storage
) -> None:
    user = f"olga-{uuid.uuid4().hex[:6]}"
    job = await new_job(sessions, user)
    made = [await new_conversation(sessions, storage, job, user, dialogue(f"o{i}"), quality_score=0.5 + i / 10)
            for i in range(5)]
    owner, everything = Owner(user), review.Selection(job=str(job))

    async def ids(selection: review.Selection, limit: int, position: review.Position) -> list[uuid.UUID]:
        return [row.conversation_id for row in await review.list_conversations(sessions, owner, selection, limit, position)]

    assert await ids(everything, 2, review.Position()) == made[:2]
    assert await ids(everything, 2, review.Position(at=str(made[2]))) == made[2:4]
    assert await ids(everything, 2, review.Position(before=str(made[2]))) == made[:2]
    assert await ids(everything, 1, review.Position(before=str(made[0]))) == []
    good = review.Selection(job=str(job), min_quality=0.65, max_quality=0.85)
    assert await ids(good, 10, review.Position()) == made[2:4]
    assert await ids(good, 10, review.Position(at=str(made[0]))) == made[2:4], "a position outside the filter still orders"
    assert await review.count_conversations(sessions, owner, good) == 2


async def test_next_and_previous_keep_the_any_status_filter(
    workspace_url: str, sessions: async_sessionmaker, storage: Storage
) -> None:
    pia = await new_user(sessions, "pia")
    job = await new_job(sessions, pia.name)
    decided, pending = [
        await new_conversation(sessions, storage, job, pia.name, dialogue(f"p{i}"), review_status=status)
        for i, status in enumerate((ReviewStatus.APPROVED.value, ReviewStatus.PENDING_REVIEW.value))
    ]
    async with browser() as client:
        await sign_in(client, workspace_url, pia.name, pia.password)
        async with client.get(f"{workspace_url}/review?job={job}&status=") as first:
            page = await first.text()
        next_url = re.search(r'href="([^"]+)" id="next"', page)
        assert next_url and f"at={pending}" in next_url.group(1)
        async with client.get(f"{workspace_url}{html.unescape(next_url.group(1))}") as following:
            page = await following.text()
        previous_url = re.search(r'href="([^"]+)" id="previous"', page)
        assert previous_url
        async with client.get(f"{workspace_url}{html.unescape(previous_url.group(1))}") as back:
            assert str(decided) in await back.text(), "back to the approved one: the filter is still any status"


async def test_a_verdicts_scores_and_reasons_show_as_text_on_its_pages_and_in_the_api(
    workspace_url: str, sessions: async_sessionmaker, storage: Storage
) -> None:
    vera = await new_user(sessions, "vera")
    job = await new_job(sessions, vera.name)
    script = "<script>alert(1)</script> reads stilted."
    verdict = await judged(sessions, storage, job, vera.name, 3.4, 1, reasons={"naturalness": script})
    unjudged = await new_conversation(sessions, storage, job, vera.name, dialogue("vera"))
    token = await users.new_api_token(sessions, vera.name)
    async with browser() as client:
        await sign_in(client, workspace_url, vera.name, vera.password)
        async with client.get(f"{workspace_url}/conversations/{verdict}") as page:
            conversation_page = await page.text()
        async with client.get(f"{workspace_url}/review?job={job}") as queue:
            queue_page = await queue.text()
        async with client.get(f"{workspace_url}/conversations/{unjudged}") as page:
            unjudged_page = await page.text()
    for shown in (conversation_page, queue_page):
        assert '<dd id="judge-score">3.40</dd>' in shown and f"{RUBRIC} v1" in shown
        assert "<strong>1</strong>: topic_accuracy as given." in shown
        assert html.escape(script) in shown and "<script>alert" not in shown, "a reason is model output: text"
    verdicts = re.search(r'<ol class="decisions" id="verdict-history">(.*?)</ol>', conversation_page, re.DOTALL)
    assert verdicts and "3.40 by claude-haiku-4-5" in verdicts.group(1) and f"({RUBRIC} v1)" in verdicts.group(1)
    assert '<dd id="judge-score">not judged</dd>' in unjudged_page

    async with browser() as api, api.get(
        f"{workspace_url}/api/conversations/{verdict}", headers={"Authorization": f"Bearer {token}"}
    ) as shown_by_api:
        body = await shown_by_api.json()
    assert (body["judge_score"], body["judge"]["rubric"], body["judge"]["rubric_version"]) == (3.4, RUBRIC, 1)
    assert body["judge"]["criteria"]["naturalness"] == {"score": 3, "reason": script}
    assert [(v["score"], v["rubric"]) for v in body["judge_history"]] == [(3.4, RUBRIC)]


async def test_the_judge_score_filter_selects_and_bulk_rejects_exactly_its_conversations(
    workspace_url: str, sessions: async_sessionmaker, storage: Storage
) -> None:
    wim = await new_user(sessions, "wim")
    job = await new_job(sessions, wim.name)
    conversations = {
        "worst": await judged(sessions, storage, job, wim.name, 1.5, 1),
        "poor": await judged(sessions, storage, job, wim.name, 2.0, 2),
        "fair": await judged(sessions, storage, job, wim.name, 3.4, 3),
        "best": await judged(sessions, storage, job, wim.name, 4.8, 5),
        "approved poor": await judged(sessions, storage, job, wim.name, 1.8, 2, ReviewStatus.APPROVED),
        "unjudged": await new_conversation(sessions, storage, job, wim.name, dialogue("wim")),
    }
    async with browser() as client:
        await sign_in(client, workspace_url, wim.name, wim.password)
        async with client.get(f"{workspace_url}/review?job={job}&min_judge_score=4") as queue:
            assert "1 match" in await queue.text()
        async with client.get(f"{workspace_url}/review?job={job}&max_judge_score=9") as refused:
            assert refused.status == 400
        async with client.get(f"{workspace_url}/review?job={job}&max_judge_score=2") as queue:
            page = await queue.text()
        assert "2 match" in page and 'id="judge-score">1.50<' in page, "the worst first, as created"
        next_url = re.search(r'href="([^"]+)" id="next"', page)
        assert next_url and "max_judge_score=2" in html.unescape(next_url.group(1))
        async with client.get(f"{workspace_url}/review/bulk?job={job}&max_judge_score=2&decision=rejected") as confirm:
            confirmation = await confirm.text()
        assert "Reject 2 pending conversations?" in confirmation
        form = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', confirmation))
        assert form["max_judge_score"] == "2"
        async with client.post(
            f"{workspace_url}/review/bulk", data={**form, "reason": "judged poor"}, allow_redirects=False
        ) as done:
            assert done.status == 303 and "done=rejected%3A2" in done.headers["Location"]
            assert "max_judge_score=2" in done.headers["Location"], "back to the same filter"

    listed = await review.list_conversations(sessions, Owner(wim.name), review.Selection(job=str(job)))
    statuses = {row.conversation_id: row.review_status for row in listed}
    assert {name: statuses[conversation].value for name, conversation in conversations.items()} == {
        "worst": "rejected", "poor": "rejected", "fair": "pending_review", "best": "pending_review",
        "approved poor": "approved", "unjudged": "pending_review",
    }


def _shown(page: str) -> str:
    found = re.search(r'action="/conversations/([0-9a-f-]+)/review" id="approve-form"', page)
    assert found, "the queue shows a conversation"
    return found.group(1)


def _link(page: str, link_id: str) -> str:
    found = re.search(rf'href="([^"]+)" id="{link_id}"', page)
    assert found, f"the page has its {link_id} link"
    return html.unescape(found.group(1))


async def test_worst_judged_first_steps_through_judged_then_unjudged_with_j_and_k(
    workspace_url: str, sessions: async_sessionmaker, storage: Storage
) -> None:
    xena = await new_user(sessions, "xena")
    job = await new_job(sessions, xena.name)
    conversations = {
        "fair": await judged(sessions, storage, job, xena.name, 3.0, 3),
        "worst": await judged(sessions, storage, job, xena.name, 1.5, 1),
        "first unjudged": await new_conversation(sessions, storage, job, xena.name, dialogue("xena")),
        "good": await judged(sessions, storage, job, xena.name, 4.0, 4),
        "worst too": await judged(sessions, storage, job, xena.name, 1.5, 2),
        "second unjudged": await new_conversation(sessions, storage, job, xena.name, dialogue("xena")),
    }
    by_id = {str(conversation): name for name, conversation in conversations.items()}
    forward, backward = [], []
    async with browser() as client:
        await sign_in(client, workspace_url, xena.name, xena.password)
        url: str | None = f"/review?job={job}&sort=judge-score"
        while url:
            async with client.get(f"{workspace_url}{url}") as queue:
                page = await queue.text()
            forward.append(by_id[_shown(page)])
            assert "sort=judge-score" in _link(page, "previous"), "k keeps the order"
            assert "sort=judge-score" in _link(page, "bulk-reject"), "so does a bulk link"
            url = _link(page, "next") if 'id="next"' in page else None
        for _ in forward[1:]:
            async with client.get(f"{workspace_url}{_link(page, 'previous')}") as queue:
                page = await queue.text()
            backward.append(by_id[_shown(page)])
        csrf = await page_token(client, workspace_url)
        undo = {"csrf_token": csrf, "return_to": f"/review?job={job}&sort=judge-score", "job": str(job), "sort": "judge-score"}
        async with client.post(
            f"{workspace_url}/conversations/{conversations['fair']}/review",
            data={"csrf_token": csrf, "decision": "approved"},
        ) as decided:
            assert decided.status == 200
        async with client.post(f"{workspace_url}/review/undo", data=undo, allow_redirects=False) as undone:
            assert "sort=judge-score" in undone.headers["Location"], "undo keeps the order"

    worst_first = ["worst", "worst too", "fair", "good", "first unjudged", "second unjudged"]
    assert forward == worst_first
    assert backward == worst_first[-2::-1]


async def test_the_queue_filters_by_one_criterion_and_exports_with_its_judge_score(
    workspace_url: str, sessions: async_sessionmaker, storage: Storage
) -> None:
    yves = await new_user(sessions, "yves")
    job = await new_job(sessions, yves.name)
    wrong_facts = await judged(sessions, storage, job, yves.name, 3.8, 1)
    await judged(sessions, storage, job, yves.name, 3.8, 4)
    await new_conversation(sessions, storage, job, yves.name, dialogue("yves"))
    async with browser() as client:
        await sign_in(client, workspace_url, yves.name, yves.password)
        async with client.get(
            f"{workspace_url}/review?job={job}&criterion=topic_accuracy&max_criterion=2&min_judge_score=3.5"
        ) as queue:
            page = await queue.text()
        async with client.get(f"{workspace_url}/review?job={job}&criterion=topic_accuracy&max_criterion=9") as refused:
            assert refused.status == 400
        async with client.get(f"{workspace_url}{_link(page, 'export')}") as exports_page:
            export_form = await exports_page.text()
    assert "1 match" in page and _shown(page) == str(wrong_facts)
    assert "criterion=topic_accuracy&max_criterion=2" in _link(page, "previous")
    assert _link(page, "export") == f"/exports?job={job}&min_quality=&min_judge_score=3.5"
    assert 'name="min_judge_score" min="1" max="5" step="0.1" value="3.5"' in export_form


async def test_another_users_export_is_not_found_by_url_or_api(
    workspace_url: str, sessions: async_sessionmaker
) -> None:
    quinn, rosa = await new_user(sessions, "quinn"), await new_user(sessions, "rosa")
    async with sessions.begin() as session:
        quinns = await session.scalar(
            insert(Export).values(created_by=quinn.name, format="messages", selection={}, location="s3://b/quinn")
            .returning(Export.id)
        )
    token = await users.new_api_token(sessions, rosa.name)
    async with browser() as client:
        await sign_in(client, workspace_url, rosa.name, rosa.password)
        for path in (f"/exports/{quinns}", f"/exports/{quinns}/download", f"/api/exports/{quinns}"):
            async with client.get(f"{workspace_url}{path}") as page:
                assert page.status == 404, path
        async with client.get(f"{workspace_url}/exports") as listed:
            assert str(quinns) not in await listed.text()
    async with browser() as script, script.get(
        f"{workspace_url}/api/exports/{quinns}", headers={"Authorization": f"Bearer {token}"}
    ) as refused:
        assert refused.status == 404
    async with browser() as client:
        await sign_in(client, workspace_url, quinn.name, quinn.password)
        async with client.get(f"{workspace_url}/api/exports/{quinns}") as own:
            assert own.status == 200 and (await own.json())["status"] == "running"


async def test_an_export_archive_is_sent_in_pieces_as_it_is_packed(storage: Storage) -> None:
    prefix = f"exports/{uuid.uuid4().hex[:8]}"
    data = os.urandom(3 * ARCHIVE_READ_BYTES)  # random: deflate cannot shrink it into one piece
    await storage.put_bytes(storage.conversation_bucket, f"{prefix}/data/train.jsonl", data, "application/x-ndjson")
    await storage.put_bytes(storage.conversation_bucket, f"{prefix}/README.md", b"# card", "text/markdown")
    now = datetime.now(UTC)
    export = ExportListing(
        export_id=uuid.uuid4(), created_by="u", status=ExportStatus.COMPLETED, format="messages",
        location=f"s3://{storage.conversation_bucket}/{prefix}", count=1, splits={}, jobs=[], error_message=None,
        created_at=now, completed_at=now,
    )

    pieces = await asyncio.to_thread(list, await export_archive(storage, export))

    assert len(pieces) >= 3 and max(len(piece) for piece in pieces) < 2 * ARCHIVE_READ_BYTES, "never the whole archive at once"
    with zipfile.ZipFile(io.BytesIO(b"".join(pieces))) as archive:
        assert archive.namelist() == ["README.md", "data/train.jsonl"]
        assert archive.read("data/train.jsonl") == data and archive.read("README.md") == b"# card"
