"""The review workspace in a real browser (Debian's chromium driven by Playwright; never
`playwright install`): sign in, follow jobs live, and review by keyboard. Every page runs under
its Content-Security-Policy: a blocked script or style would show as a console error, and the
tests fail on any. Screenshots of each page go to the test run's tmp directory."""

from __future__ import annotations

import asyncio
import re
import uuid
import zipfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import pytest
from playwright.async_api import Browser, Page, async_playwright, expect
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.client import Client

from brightrun.settings import Settings
from brightrun.storage import Storage
from devtools.standin_control import StandinControl
from models.enums import Tier
from models.tables import BatchJob, Conversation
from tests.conversations import dialogue, new_conversation, new_job
from tests.helpers import launch_and_wait
from tests.test_web_ui import CHROMIUM, CHROMIUM_ARGS, UI_TIMEOUT_MS
from tests.workspace import Person, new_user


@dataclass
class Watched:
    """A page, and what it said went wrong: console errors, uncaught exceptions, dialogs."""

    page: Page
    problems: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("workspace-screenshots")


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


async def watched_page(browser: Browser) -> Watched:
    page = await browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(UI_TIMEOUT_MS)
    expect.set_options(timeout=UI_TIMEOUT_MS)
    watched = Watched(page)
    page.on(
        "console",
        lambda message: watched.problems.append(f"console {message.text} at {message.location}") if message.type == "error" else None,
    )
    page.on("pageerror", lambda error: watched.problems.append(f"page error {error}"))

    async def refuse(dialog: object) -> None:
        watched.problems.append(f"dialog {getattr(dialog, 'message', '')}")
        await dialog.dismiss()  # type: ignore[attr-defined]

    page.on("dialog", refuse)
    return watched


async def sign_in(page: Page, url: str, person: Person) -> None:
    await page.goto(f"{url}/jobs")
    await expect(page).to_have_url(f"{url}/login?next=%2Fjobs")
    await page.get_by_label("User name").fill(person.name)
    await page.get_by_label("Password").fill(person.password)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page).to_have_url(f"{url}/jobs")


async def test_a_reviewer_signs_in_and_follows_a_job_live(
    workspace_url: str, stack: dict[str, str], sessions: async_sessionmaker, screenshots: Path
) -> None:
    kate = await new_user(sessions, "kate")
    job = await new_job(sessions, kate.name)
    name = f"live job {uuid.uuid4().hex[:6]}"
    async with sessions.begin() as session:
        await session.execute(update(BatchJob).where(BatchJob.id == job).values(name=name, total_items=4, completed_items=1))

    async with chromium() as browser:
        watched = await watched_page(browser)
        page = watched.page
        await page.goto(f"{workspace_url}/login")
        await page.screenshot(path=screenshots / "login.png")
        await sign_in(page, workspace_url, kate)
        row = page.locator(f'tr[data-job-id="{job}"]')
        await expect(row.get_by_role("link", name=name)).to_be_visible()
        await expect(row.locator('[data-field="counts"]')).to_have_text("1/4")
        await page.screenshot(path=screenshots / "jobs.png")

        async with sessions.begin() as session:
            await session.execute(update(BatchJob).where(BatchJob.id == job).values(completed_items=3))
        await expect(row.locator('[data-field="counts"]')).to_have_text("3/4")  # the page polled, not reloaded
        await expect(row.locator('[data-field="progress"]')).to_have_attribute("value", "3")

        await row.get_by_role("link", name=name).click()
        await expect(page.get_by_role("heading", name=name)).to_be_visible()
        workflow_link = page.get_by_role("link", name=f"workflow batch-job-{job} in Temporal")
        assert await workflow_link.get_attribute("href") == f"{stack['TEMPORAL_UI_URL']}/namespaces/default/workflows/batch-job-{job}"
        await expect(page.get_by_role("button", name="Pause")).to_be_visible()
        await page.screenshot(path=screenshots / "job.png")

        await page.get_by_role("button", name="Sign out").click()
        await expect(page).to_have_url(f"{workspace_url}/login")
        await page.goto(f"{workspace_url}/jobs/{job}")
        await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
        assert watched.problems == []


async def _status(sessions: async_sessionmaker, conversation_id: uuid.UUID) -> tuple[str, str | None]:
    async with sessions() as session:
        row = (await session.execute(
            select(Conversation.review_status, Conversation.review_reason).where(Conversation.conversation_id == conversation_id)
        )).one()
    return row.review_status, row.review_reason


async def test_a_reviewer_reviews_five_conversations_by_keyboard_and_bulk_rejects_near_duplicates(
    workspace_url: str, sessions: async_sessionmaker, storage: Storage, screenshots: Path
) -> None:
    lou = await new_user(sessions, "lou")
    job = await new_job(sessions, lou.name)
    five = [await new_conversation(sessions, storage, job, lou.name, dialogue(f"lou{i}")) for i in range(5)]
    similar = dialogue("lou0")
    similar[1]["content"] = similar[1]["content"].replace("clear plan", "steady plan")
    near = [
        await new_conversation(sessions, storage, job, lou.name, similar, near_duplicate=True, near_duplicate_of=five[0])
        for _ in range(2)
    ]

    async with chromium() as browser:
        watched = await watched_page(browser)
        page = watched.page
        await sign_in(page, workspace_url, lou)
        await page.goto(f"{workspace_url}/review?job={job}")
        chat = page.locator("#chat")

        async def shows(conversation_id: uuid.UUID, seed: str) -> None:
            await expect(page.get_by_role("link", name=str(conversation_id))).to_be_visible()
            await expect(chat.locator(".turn").first).to_contain_text(f"{seed} turn 0")
            await expect(page.locator("html")).to_have_attribute("data-keys", "ready")  # its keys work now

        await shows(five[0], "lou0")
        await page.screenshot(path=screenshots / "review.png")
        await page.keyboard.press("a")  # approve the first
        await shows(five[1], "lou1")
        await page.keyboard.press("r")  # reject the second, with a reason
        await page.keyboard.type("the advisor promises returns")
        await page.keyboard.press("Enter")
        await shows(five[2], "lou2")
        await page.keyboard.press("a")
        await shows(five[3], "lou3")
        await page.keyboard.press("u")  # take back the approval of the third: it is shown again
        await shows(five[2], "lou2")
        await page.keyboard.press("j")  # skip it for now
        await shows(five[3], "lou3")
        await page.keyboard.press("a")
        await shows(five[4], "lou4")
        await page.keyboard.press("k")  # back to the third, still pending
        await shows(five[2], "lou2")
        await page.keyboard.press("r")
        await expect(page.locator("#reasons option")).to_have_count(1)  # the last reason, offered again
        await page.keyboard.type("the advisor promises returns")
        await page.keyboard.press("Enter")
        await shows(five[4], "lou4")
        decisions = page.locator("#decisions li")
        await expect(decisions).to_have_count(6)  # five decisions and an undo
        await expect(decisions.first).to_contain_text("rejected (the advisor promises returns)")
        await page.screenshot(path=screenshots / "review-decided.png")
        await page.goto(f"{workspace_url}/conversations/{five[1]}")
        history = re.compile(f"^rejected by {lou.name}, .* \\(the advisor promises returns\\)$")
        await expect(page.locator("#history li")).to_have_text([history])  # who decided what, and when
        await page.screenshot(path=screenshots / "conversation.png")

        assert [await _status(sessions, c) for c in five] == [
            ("approved", None), ("rejected", "the advisor promises returns"), ("rejected", "the advisor promises returns"),
            ("approved", None), ("pending_review", None),
        ]

        await page.goto(f"{workspace_url}/review?job={job}&near_duplicates=1")
        await shows(near[0], "lou0")
        pair = page.locator("#near-duplicate")
        await expect(pair.locator(".diff del")).to_have_text(["clear"])  # only in the earlier one
        await expect(pair.locator(".diff ins")).to_have_text(["steady"])  # only in this one
        await page.screenshot(path=screenshots / "near-duplicate.png", full_page=True)  # the pair is below the chat
        await page.get_by_role("link", name="Reject all pending…").click()
        await expect(page.get_by_role("heading", name="Reject 2 pending conversations?")).to_be_visible()
        await page.screenshot(path=screenshots / "bulk-confirmation.png")
        await page.get_by_role("button", name="Reject 2").click()
        await expect(page.locator("#done")).to_have_text("rejected 2 conversations.")
        await expect(page.locator("#queue-empty")).to_be_visible()
        assert watched.problems == []

    assert [await _status(sessions, c) for c in near] == [("rejected", f"near-duplicate of conversation {five[0]}")] * 2
    assert await _status(sessions, five[4]) == ("pending_review", None), "a bulk rejection takes only the filter's"


async def test_markup_in_a_generated_conversation_renders_as_text_and_runs_nothing(
    workspace_url: str, sessions: async_sessionmaker, stack_client: Client, stack_settings: Settings,
    pipeline_worker: None, standin: StandinControl, screenshots: Path,
) -> None:
    mallory = await new_user(sessions, "mal")
    suffix = ' <script>alert("script")</script><img src=x onerror="alert(\'img\')"> {{ 7*7 }}'
    await standin.configure(turn_suffix=suffix)
    job = await launch_and_wait(
        sessions, stack_client, stack_settings, personas=["David Chen"], arcs=["Couple Conflict -> Alignment"],
        topics=["Essential Estate Planning"], tier=Tier.TEMPLATE, user=mallory.name, name="<b>markup</b> job",
    )

    async with chromium() as browser:
        watched = await watched_page(browser)
        page = watched.page
        await sign_in(page, workspace_url, mallory)
        await page.goto(f"{workspace_url}/review?job={job.job_id}&status=")
        assistant = page.locator('#chat .turn[data-role="assistant"]').first
        await expect(assistant).to_contain_text(suffix.strip())
        assert await page.locator("#chat script, #chat img").count() == 0
        await page.screenshot(path=screenshots / "markup-as-text.png")
        await page.goto(f"{workspace_url}/jobs")
        await expect(page.get_by_role("link", name="<b>markup</b> job")).to_be_visible()
        assert watched.problems == [], "a script ran, a dialog opened, or the page broke its policy"


async def test_a_reviewer_exports_the_approved_ones_and_the_archive_loads_with_datasets(
    workspace_url: str, sessions: async_sessionmaker, storage: Storage, pipeline_worker: None, screenshots: Path,
    tmp_path: Path,
) -> None:
    pat = await new_user(sessions, "pat")
    job = await new_job(sessions, pat.name)
    approved = [await new_conversation(sessions, storage, job, pat.name, dialogue(f"pat{i}"),
                                       review_status="approved") for i in range(4)]
    await new_conversation(sessions, storage, job, pat.name, dialogue("pat-pending"))

    async with chromium() as browser:
        watched = await watched_page(browser)
        page = watched.page
        await sign_in(page, workspace_url, pat)
        await page.goto(f"{workspace_url}/exports?job={job}")
        await page.get_by_label("Splits").fill("train=0.75,validation=0.25")
        await page.get_by_label("Seed").fill("3")
        await page.get_by_role("button", name="Export").click()
        await expect(page.locator("#export-status")).to_have_text("completed")  # the page followed it
        await expect(page.locator("#export-location")).to_contain_text(f"s3://{storage.conversation_bucket}/exports/{pat.name}/")
        await expect(page.locator("#card")).to_contain_text("configs:")
        await expect(page.locator("#manifest")).to_contain_text(str(approved[0]))
        await page.screenshot(path=screenshots / "export.png", full_page=True)
        async with page.expect_download() as downloading:
            await page.get_by_role("link", name="Download the dataset").click()
        archive = tmp_path / "export.zip"
        await (await downloading.value).save_as(archive)
        await page.goto(f"{workspace_url}/exports")
        await expect(page.locator("#exports tbody tr")).to_have_count(1)
        await page.screenshot(path=screenshots / "exports.png")
        assert watched.problems == []

    unpacked = tmp_path / "dataset"
    with zipfile.ZipFile(archive) as packed:
        packed.extractall(unpacked)
    dataset = await asyncio.to_thread(datasets.load_dataset, str(unpacked))
    assert {name: split.num_rows for name, split in dataset.items()} == {"train": 3, "validation": 1}


async def test_a_user_launches_a_batch_from_the_catalog_after_its_estimate_and_lands_on_its_page(
    workspace_url: str, sessions: async_sessionmaker, screenshots: Path
) -> None:
    ruth = await new_user(sessions, "ruth")
    name = f"launched {uuid.uuid4().hex[:6]}"
    async with chromium() as browser:
        watched = await watched_page(browser)
        page = watched.page
        await sign_in(page, workspace_url, ruth)
        await page.goto(f"{workspace_url}/launch")
        await expect(page.locator("#item-count")).to_have_text("0 items")
        await expect(page.get_by_role("button", name="Launch")).to_be_disabled()
        await page.get_by_label("Search personas").fill("chen")
        await expect(page.get_by_label("Maria Gonzalez")).to_be_hidden()
        await page.get_by_label("David Chen").check()
        await page.get_by_label("Search personas").fill("")
        await page.get_by_label("Maria Gonzalez").check()
        await page.get_by_label("Couple Conflict -> Alignment").check()
        await page.get_by_label("Essential Estate Planning").check()
        await page.get_by_label("Samples per combination").fill("3")
        await page.get_by_label("Name", exact=True).fill(name)
        await expect(page.locator("#item-count")).to_have_text("6 items")  # 2 personas x 1 x 1 x 3 samples
        await page.get_by_label("Budget (USD)").fill("5")
        await page.get_by_role("button", name="Estimate").click()
        await expect(page.locator("#estimate-online")).to_contain_text("$")  # the dry run's, before the launch
        await expect(page.locator("#estimate-batch")).to_contain_text("$")
        await expect(page.locator("#item-count")).to_have_text("6 items")  # the picks are kept
        await expect(page.get_by_label("Name", exact=True)).to_have_value(name)
        await page.screenshot(path=screenshots / "launch.png", full_page=True)
        await page.get_by_role("button", name="Launch").click()
        await expect(page.get_by_role("heading", name=name)).to_be_visible()
        assert watched.problems == []
        job_id = page.url.rsplit("/", 1)[1]

    async with sessions() as session:
        job = await session.get(BatchJob, uuid.UUID(job_id))
    assert job is not None and (job.created_by, job.total_items, job.name, job.max_cost_usd) == (ruth.name, 6, name, 5.0)
    assert job.estimate is not None and job.estimate["items"] == 6
