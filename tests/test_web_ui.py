"""The Temporal web UI, in a real browser (Debian's chromium, driven by Playwright; never
`playwright install`): a job shows its summary and live details, and the BatchStatus saved
query for `failed` lists a job that ended failed."""

from __future__ import annotations

import uuid
from urllib.parse import quote

from playwright.async_api import Page, async_playwright, expect
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.client import Client

from brightrun.settings import Settings
from devtools.standin_control import StandinControl
from models.enums import Tier
from service import batches
from tests.helpers import launch_and_wait

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
            # The UI renders each markdown text in an iframe of its own: summary first, details second.
            summary, details = page.frame_locator("iframe").nth(0), page.frame_locator("iframe").nth(1)
            await expect(summary.get_by_text(f"{done_name} · 1 items · template · online")).to_be_visible()
            await expect(details.get_by_text("1 of 1 done, 1 succeeded, 0 failed")).to_be_visible()

            await _list(page, ui, 'BatchStatus="failed"')
            await expect(page.get_by_text(failed.workflow_id).first).to_be_visible()
            assert await page.get_by_text(done.workflow_id).count() == 0, "a completed job is listed as failed"
        finally:
            await browser.close()


async def _list(page: Page, ui: str, query: str) -> None:
    await page.goto(f"{ui}/namespaces/default/workflows?query={quote(query)}")
