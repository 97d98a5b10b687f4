"""/docs and /redoc render in Chromium with every request that leaves 127.0.0.1 blocked: their scripts and
styles are served by the service itself (the fastapi-offline package's Swagger UI and ReDoc bundles)."""

from __future__ import annotations

from urllib.parse import urlparse

import pytest

pytestmark = pytest.mark.slow


def _offline_page(browser):  # noqa: ANN001, ANN202 - Playwright objects
    """A page whose requests to anything but 127.0.0.1 are aborted (and recorded)."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    outside: list[str] = []

    def route(r):  # noqa: ANN001, ANN202
        if urlparse(r.request.url).hostname == "127.0.0.1":
            return r.continue_()
        outside.append(r.request.url)
        return r.abort()

    page.route("**/*", route)
    return page, outside


def test_swagger_ui_renders_the_operations_offline(tmp_path, serve, browser):
    server = serve(f"sqlite:///{tmp_path / 'feedback.sqlite'}")
    page, outside = _offline_page(browser)
    page.goto(server.url + "/docs")
    page.wait_for_selector(".opblock-summary-path", timeout=30_000)
    paths = set(page.locator(".opblock-summary-path").all_inner_texts())
    assert {"/api/v1/votes", "/api/v1/tasks/next", "/api/v1/annotators"} <= {p.strip() for p in paths}, paths
    assert page.locator(".opblock").count() >= 10
    page.screenshot(path=str(tmp_path / "docs.png"), full_page=False)
    assert outside == []


def test_redoc_renders_the_operations_offline(tmp_path, serve, browser):
    server = serve(f"sqlite:///{tmp_path / 'feedback.sqlite'}")
    page, outside = _offline_page(browser)
    page.goto(server.url + "/redoc")
    page.wait_for_selector("[data-section-id^='operation/']", timeout=30_000)
    assert page.locator("[data-section-id^='operation/']").count() >= 10
    assert "/api/v1/votes" in page.inner_text("body")
    page.screenshot(path=str(tmp_path / "redoc.png"), full_page=False)
    assert outside == []
