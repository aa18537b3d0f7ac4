"""The Temporal web UI, in a real browser (Debian's chromium, driven by Playwright; never
`playwright install`): a job shows its summary and live details, and the BatchStatus saved
query for `failed` lists a job that ended failed; a failed job shows Failed and a cancelled one
(by `starter.py cancel` or the UI's Request Cancellation) Canceled, in the list and on its page;
the jobs view of docs/web-ui.md shows each job's name and progress; a job's page links to its
items and an item's page back to its job."""

from __future__ import annotations

import uuid
from urllib.parse import quote

from playwright.async_api import Browser, Page, async_playwright, expect
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.client import Client

from brightrun.settings import Settings
from devtools.standin_control import StandinControl
from models.enums import Tier
from models.web_ui import JOBS_VIEW_COLUMNS, jobs_view_path
from service import batches
from service.job_outcome import job_outcome
from tests.helpers import eventually, launch_and_wait

CHROMIUM = "/usr/bin/chromium"
# The flags verified on these machines: no sandbox as root, and nothing that reaches the network.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
UI_TIMEOUT_MS = 30_000



def _one_item_job(name: str) -> batches.LaunchRequest:
    return batches.LaunchRequest(
        personas=["David Chen"],
        arcs=["Couple Conflict -> Alignment"],
        topics=["Essential Estate Planning"],
        tier=Tier.TEMPLATE,
        name=name,
    )


async def test_the_web_ui_shows_a_jobs_summary_and_details_and_finds_a_failed_job_by_its_status(
    stack: dict[str, str],
    sessions: async_sessionmaker,
    stack_client: Client,
    stack_settings: Settings,
    pipeline_worker: None,
    standin: StandinControl,
) -> None:
    await standin.configure(script=["400"])  # the only item's Claude call is refused: the job fails
    failed_name = f"ui-failed-{uuid.uuid4().hex[:8]}"
    failed = await launch_and_wait(sessions, stack_client, stack_settings, **vars(_one_item_job(failed_name)))
    assert (await batches.job_status(sessions, str(failed.job_id), stack_client)).status == "failed"
    done_name = f"ui-done-{uuid.uuid4().hex[:8]}"
    done = await launch_and_wait(sessions, stack_client, stack_settings, **vars(_one_item_job(done_name)))

    ui = stack["TEMPORAL_UI_URL"]
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page()
            page.set_default_timeout(UI_TIMEOUT_MS)
            expect.set_options(timeout=UI_TIMEOUT_MS)

            await page.goto(f"{ui}/namespaces/default/workflows/{done.workflow_id}")
            await page.get_by_role("tab", name="User Metadata").click()
            # The UI renders each markdown text in an iframe of its own: the summary, the static
            # details (links to the job's items), the live details.
            summary, details = page.frame_locator("iframe").nth(0), page.frame_locator("iframe").nth(2)
            await expect(summary.get_by_text(f"{done_name} · 1 items · template · online")).to_be_visible()
            await expect(details.get_by_text("1 of 1 done, 1 succeeded, 0 failed")).to_be_visible()

            await _list(page, ui, 'BatchStatus="failed"')
            await expect(page.get_by_text(failed.workflow_id).first).to_be_visible()
            assert await page.get_by_text(done.workflow_id).count() == 0, "a completed job is listed as failed"
        finally:
            await browser.close()


async def _list(page: Page, ui: str, query: str) -> None:
    await page.goto(f"{ui}/namespaces/default/workflows?query={quote(query)}")




async def test_failed_and_cancelled_jobs_show_so_and_the_jobs_view_shows_names_and_progress(
    stack: dict[str, str],
    sessions: async_sessionmaker,
    stack_client: Client,
    stack_settings: Settings,
    pipeline_worker: None,
    standin: StandinControl,
) -> None:
    run = uuid.uuid4().hex[:8]
    await standin.configure(script=["400"])  # the only item's Claude call is refused: the job fails
    failed = await launch_and_wait(sessions, stack_client, stack_settings, **vars(_one_item_job(f"ui-failed-{run}")))
    await standin.reset()
    done = await launch_and_wait(sessions, stack_client, stack_settings, **vars(_one_item_job(f"ui-done-{run}")))
    await standin.configure(latency_ms=120_000)  # the next jobs' items stay in flight until cancelled
    by_cli = await batches.launch(sessions, stack_client, stack_settings, _one_item_job(f"ui-cancel-cli-{run}"))
    by_ui = await batches.launch(sessions, stack_client, stack_settings, _one_item_job(f"ui-cancel-ui-{run}"))
    await batches.control_job(sessions, stack_client, str(by_cli.job_id), "cancel")  # what `starter.py cancel` does

    ui = stack["TEMPORAL_UI_URL"]
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await _page(browser)
            # The web UI's Request Cancellation, on the running job's page.
            await page.goto(f"{ui}/namespaces/default/workflows/{by_ui.workflow_id}")
            await page.locator("button:visible", has_text="Request Cancellation").click()
            await page.locator("dialog[open]").get_by_role("button", name="Confirm").click()
            assert (await job_outcome(stack_client.get_workflow_handle(by_ui.workflow_id))).status == "cancelled"
            cancelled_in_ui = await batches.job_status(sessions, str(by_ui.job_id), stack_client)
            assert (cancelled_in_ui.status, cancelled_in_ui.cancelled) == ("cancelled", 1), "the job ended cleanly"

            # The jobs view (docs/web-ui.md): job workflows only, the job columns added as a user
            # does once per browser.
            await page.goto(ui + jobs_view_path("default"))  # the bookmark of docs/web-ui.md
            await page.get_by_test_id("workflows-summary-table-configuration-button").click()
            for column in JOBS_VIEW_COLUMNS:
                await page.get_by_role("button", name=f"Add {column} column").click()
            await page.keyboard.press("Escape")
            for column in JOBS_VIEW_COLUMNS:
                await expect(page.get_by_role("columnheader", name=column)).to_be_visible()
            rows = {
                failed.workflow_id: ("Failed", f"ui-failed-{run}", "failed"),
                done.workflow_id: ("Completed", f"ui-done-{run}", "completed"),
                by_cli.workflow_id: ("Canceled", f"ui-cancel-cli-{run}", "cancelled"),
                by_ui.workflow_id: ("Canceled", f"ui-cancel-ui-{run}", "cancelled"),
            }
            for workflow_id, (badge, name, job_status) in rows.items():
                row = page.get_by_role("row").filter(has_text=workflow_id)
                await expect(row.get_by_test_id("execution-status")).to_have_text(badge)
                for cell in (name, "1/1", "100", job_status):  # BatchProgress: done of total
                    await expect(row.get_by_role("cell", name=cell, exact=True)).to_be_visible()
            assert await page.get_by_role("row").filter(has_text="batch-item-").count() == 0, "items in the jobs view"

            # Each job's own page: its badge, and for the failed one the job's reason.
            for workflow_id, (badge, _name, _status) in rows.items():
                await page.goto(f"{ui}/namespaces/default/workflows/{workflow_id}")
                await expect(page.locator("header").get_by_test_id("execution-status").first).to_have_text(badge)
            await page.goto(f"{ui}/namespaces/default/workflows/{failed.workflow_id}")
            await expect(page.get_by_text("all 1 items failed").first).to_be_visible()

            # The job's details link to its items; an item's details link back to the job.
            await page.get_by_role("tab", name="User Metadata").click()
            async with page.context.expect_page() as opened:
                await page.frame_locator("iframe").nth(1).get_by_role("link", name="its items").click()
            items = await opened.value
            item_link = items.locator("a[href*='/workflows/batch-item-']").first
            await expect(item_link).to_be_visible()
            await items.goto(ui + str(await item_link.get_attribute("href")))
            await items.get_by_role("tab", name="User Metadata").click()
            back = items.frame_locator("iframe").nth(1).get_by_role("link", name=failed.workflow_id)
            assert await back.get_attribute("href") == f"/namespaces/default/workflows/{failed.workflow_id}"
        finally:
            await browser.close()
    await eventually(lambda: _ended(stack_client, by_cli.workflow_id), "the cancelled job's workflow ended")


async def _page(browser: Browser) -> Page:
    page = await browser.new_page(viewport={"width": 1600, "height": 1000})
    page.set_default_timeout(UI_TIMEOUT_MS)
    expect.set_options(timeout=UI_TIMEOUT_MS)
    return page


async def _ended(client: Client, workflow_id: str) -> bool:
    return (await client.get_workflow_handle(workflow_id).describe()).close_time is not None
