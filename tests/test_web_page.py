"""The web page in a real headless Chromium (Debian's, driven by Playwright) against a real
`rlprune serve`: submit a job from the page and see it finish; its page with the stage, the
result table, the files and the charts; reload, a new tab and a deep link; cancel -> resume
followed on one page; two runs compared; the API docs with the network cut off."""

from __future__ import annotations

import shutil

import pytest
from support.service import TINY_JOB, start_service

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (.ci/run installs it: "
                                                         "apt-get install chromium)")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# long enough to cancel in the middle (LeNet-300 on digits, ~10 ms an episode)
# still running when the page cancels it (after 30 episodes): each evaluation also sleeps
LONG_JOB = {**TINY_JOB, "episodes": 120, "warmup": 20, "checkpoint_every": 20,
            "simulated_eval_s": 0.1}


@pytest.fixture(scope="module")
def svc(tmp_path_factory):
    service = start_service(tmp_path_factory.mktemp("page") / "runs", "--max-running", "1")
    yield service
    service.stop()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        yield chromium
        chromium.close()


@pytest.fixture
def context(browser, svc):
    """A browser profile that has opened the page once with the token (the session cookie)."""
    ctx = browser.new_context(viewport={"width": 1100, "height": 900})
    page = ctx.new_page()
    page.goto(f"{svc.url}/?token={svc.token}")
    assert "token=" not in page.url  # the cookie has it; the address bar does not
    yield ctx
    ctx.close()


def test_submit_from_the_page_then_its_results_survive_reload_and_a_new_tab(context, svc):
    from playwright.sync_api import expect

    page = context.pages[0]
    page.fill("input[name=model]", "lenet300")
    page.fill("input[name=dataset]", "digits")
    page.select_option("select[name=fc_rule]", "agent")
    page.fill("input[name=target]", "0.8")
    page.fill("input[name=episodes]", "abc")
    page.click("#submit-button")
    expect(page.locator("#message")).to_contain_text("episodes must be a whole number, got 'abc'")
    page.fill("input[name=episodes]", "8")
    page.fill("input[name=warmup]", "3")
    page.fill("input[name=finetune_epochs]", "1")
    page.click("#submit-button")
    expect(page.locator("#message.ok")).to_contain_text("submitted", timeout=30_000)
    row = page.locator("#jobs tbody tr").first
    expect(row.locator(".state")).to_have_text("finished", timeout=180_000)
    expect(row).to_contain_text("8/8")
    expect(row).to_contain_text("lenet300")
    expect(row.locator("button")).to_have_count(0)  # nothing to cancel or resume
    job_id = row.get_attribute("data-id")
    row.locator("a").click()
    _expect_results(page, job_id)
    page.reload()  # F5: the session cookie opens the page again, on the same job
    _expect_results(page, job_id)
    tab = context.new_page()  # a new tab, straight to the deep link
    tab.goto(f"{svc.url}/#job={job_id}")
    _expect_results(tab, job_id)
    report = tab.request.get(f"{svc.url}/v1/jobs/{job_id}/artifacts/report.md")
    assert report.ok and report.headers["content-type"].startswith("text/markdown")
    tab.goto(f"{svc.url}/#job=nope")
    expect(tab.locator("#job-title")).to_have_text("no job nope")


def _expect_results(page, job_id: str) -> None:
    from playwright.sync_api import expect

    expect(page.locator("#job-title")).to_have_text(job_id)
    expect(page.locator("#job-state")).to_have_text("finished", timeout=30_000)
    expect(page.locator("#job-episode")).to_have_text("8/8")
    expect(page.locator("#job-stage")).to_have_text("all stages done")
    result = page.locator("#result")
    for words in ("test accuracy, dense", "test accuracy, fine-tuned", "params dense",
                  "size on disk"):
        expect(result).to_contain_text(words)
    for name in ("report.md", "rewards.png", "sparsity.png", "policy.json"):
        expect(page.locator("#files a", has_text=name)).to_have_count(1)
    expect(page.locator("#cancel")).to_be_hidden()
    expect(page.locator("#resume")).to_be_hidden()
    # plotly's charts: reward, best so far and the best episode; one bar per layer
    expect(page.locator("#curve .scatterlayer .trace")).to_have_count(3)
    expect(page.locator("#curve .xtitle")).to_have_text("episode")
    expect(page.locator("#bars .bars .point")).to_have_count(3)  # LeNet-300's three layers


def test_cancel_then_resume_on_one_page_follows_the_job_to_the_end(context, svc):
    from playwright.sync_api import expect

    job_id = svc.submit(LONG_JOB)
    page = context.pages[0]
    page.goto(f"{svc.url}/#job={job_id}")
    expect(page.locator("#job-stage")).to_contain_text("stage: search", timeout=60_000)
    page.wait_for_function("parseInt(document.getElementById('job-episode').textContent) >= 30",
                           timeout=60_000)
    page.click("#cancel")
    expect(page.locator("#job-state")).to_have_text("cancelled", timeout=60_000)
    expect(page.locator("#resume")).to_be_visible()
    stopped_at = svc.job(job_id)["progress"]["episodes_done"]
    assert stopped_at < LONG_JOB["episodes"]
    page.click("#resume")
    expect(page.locator("#job-state")).to_have_text("finished", timeout=180_000)
    episodes = LONG_JOB["episodes"]
    expect(page.locator("#job-episode")).to_have_text(f"{episodes}/{episodes}")
    expect(page.locator("#result")).to_contain_text("test accuracy, fine-tuned")
    # every episode drawn once, the resumed ones included (the stream went on from its last id)
    drawn = page.evaluate("document.getElementById('curve').data[0].x")
    assert drawn == list(range(1, episodes + 1))


def test_two_runs_compare(context, svc, tmp_path):
    from playwright.sync_api import expect

    first = svc.submit({**TINY_JOB, "target": 0.6})
    second = svc.submit({**TINY_JOB, "target": 0.9})
    for job_id in (first, second):
        svc.wait(job_id)
    page = context.pages[0]
    page.goto(f"{svc.url}/#")
    for job_id in (first, second):
        page.locator(f"#jobs tr[data-id='{job_id}'] input.pick").check()
    page.click("#compare-button")
    expect(page.locator("#compare-curve .scatterlayer .trace")).to_have_count(2)
    table = page.locator("#compare-table")
    for job_id in (first, second):
        expect(table.locator("thead")).to_contain_text(job_id)
    row = table.locator("tr", has_text="sparsity of prunable weights")
    expect(row).to_contain_text("60.00%")
    expect(row).to_contain_text("90.00%")
    # the README's screenshots come from studies/page_screenshots.py: the same on these jobs
    shots = _screenshots_study().shoot(context, svc.url, svc.token, [first, second],
                                       tmp_path, running_at=1)
    for shot in shots:
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000


def _screenshots_study():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[1] / "studies" / "page_screenshots.py"
    spec = importlib.util.spec_from_file_location("page_screenshots", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_api_docs_render_with_the_network_cut_off(context, svc):
    from playwright.sync_api import expect

    page = context.new_page()
    asked = []

    def local_only(route):
        asked.append(route.request.url)
        if route.request.url.startswith(svc.url):
            route.continue_()
        else:
            route.abort()

    page.route("**/*", local_only)
    page.goto(f"{svc.url}/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("rlprune", timeout=30_000)
    expect(page.locator(".swagger-ui .opblock").first).to_be_visible()
    assert all(url.startswith(svc.url) for url in asked), asked
