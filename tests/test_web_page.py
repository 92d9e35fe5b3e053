"""The web page in a real headless Chromium (Debian's, driven by Playwright): submit a short
job from the page, see it finish in the table, open its page with the reward curve and the
per-layer sparsity bars."""

from __future__ import annotations

import shutil

import pytest
from support.service import start_service

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (.ci/run installs it: "
                                                         "apt-get install chromium)")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def test_submit_from_the_page_and_watch_it_finish(tmp_path):
    from playwright.sync_api import expect, sync_playwright

    svc = start_service(tmp_path / "runs", "--max-running", "1")
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.goto(f"{svc.url}/?token={svc.token}")
            assert "token=" not in page.url  # taken into the tab's storage, out of the URL
            page.fill("input[name=model]", "lenet300")
            page.fill("input[name=dataset]", "digits")
            page.select_option("select[name=fc_rule]", "agent")
            page.fill("input[name=target]", "0.8")
            page.fill("input[name=episodes]", "8")
            page.fill("input[name=warmup]", "3")
            page.fill("input[name=finetune_epochs]", "0")
            page.click("#submit-button")
            expect(page.locator("#message")).to_contain_text("submitted", timeout=30_000)
            row = page.locator("#jobs tbody tr").first
            expect(row.locator(".state")).to_have_text("finished", timeout=180_000)
            expect(row).to_contain_text("8/8")
            job_id = row.get_attribute("data-id")
            row.locator("a").click()
            expect(page.locator("#job-state")).to_have_text("finished", timeout=30_000)
            expect(page.locator("#job-episode")).to_have_text("8/8")
            expect(page.locator("#reward-line")).to_have_count(1)
            assert page.locator("#bars rect.bar").count() == 3  # LeNet-300's three layers
            page.screenshot(path=str(tmp_path / "page.png"))
            browser.close()
        assert svc.job(job_id)["state"] == "finished"
    finally:
        svc.stop()
