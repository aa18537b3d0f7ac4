"""The review workspace in a real browser (Debian's chromium driven by Playwright; never
`playwright install`): sign in, follow jobs live, and review by keyboard. Every page runs under
its Content-Security-Policy: a blocked script or style would show as a console error, and the
tests fail on any. Screenshots of each page go to the test run's tmp directory."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright, expect
from sqlalchemy import update
from sqlalchemy.ext.asyncio import async_sessionmaker

from models.tables import BatchJob
from tests.conversations import new_job
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

