"""The annotator page in a real browser: Debian's chromium driven by Playwright (no browser download)."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from rlhf_dist.feedback.db import open_database, transaction
from rlhf_dist.feedback.tables import Pair, Vote
from tests.feedback.conftest import ADMIN_TOKEN, add_annotator, import_pairs

pytestmark = pytest.mark.slow
PAIRS = [
    {"prompt": "Greet the user.", "response_a": "Hello! How can I help?",
     "response_b": "<script>alert('xss')</script>"},
    {"prompt": "Describe the cafe.", "response_a": "<img src=x onerror=alert('img')> Lovely.",
     "response_b": "A quiet place with good coffee.\n" * 40},
    {"prompt": "Say goodbye.", "response_a": "Goodbye, take care!", "response_b": "bye"},
]


def test_annotator_votes_with_the_keyboard(tmp_path, serve, browser):
    db_url = f"sqlite:///{tmp_path / 'feedback.sqlite'}"
    server = serve(db_url)
    admin = server.client()
    import_pairs(admin, "pilot", PAIRS)
    token = add_annotator(admin, "alice")

    page = browser.new_page(viewport={"width": 1280, "height": 800})
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(server.url + "/")
    title = page.title()
    page.fill("#token", token)
    page.fill("#campaign", "pilot")
    page.click("button[type=submit]")

    # pair 1: left is better, "much" (r); pair 2: right, "slightly" (w) with a reason; pair 3: tie
    plan = [("1", "r", "", "left", 1.0), ("2", "w", "clearer", "right", 0.7), ("3", "q", "", "tie", 0.55)]
    shown = []
    for i, (choice_key, strength_key, reason, _choice, _conf) in enumerate(plan):
        page.wait_for_selector("#task:not([hidden])")
        expect(page.locator("#prompt")).not_to_have_text("")
        shown.append((page.inner_text("#prompt"), page.text_content("#left"), page.text_content("#right")))
        page.screenshot(path=str(tmp_path / f"pair-{i}.png"), full_page=True)
        page.keyboard.press(choice_key)
        page.keyboard.press(strength_key)
        if reason:
            page.fill("#reasoning", reason)
            page.focus("#submit")
        page.keyboard.press("Enter")
        if i < len(plan) - 1:
            expect(page.locator("#prompt")).not_to_have_text(shown[-1][0])
    page.wait_for_selector("#done:not([hidden])")
    page.screenshot(path=str(tmp_path / "done.png"))

    assert dialogs == [] and page.title() == title  # the <script>/<img onerror> responses ran nothing
    texts = [t for _p, left, right in shown for t in (left, right)]
    assert PAIRS[0]["response_b"] in texts and PAIRS[1]["response_a"] in texts  # shown verbatim, as text

    with transaction(open_database(db_url)) as session:
        votes = session.execute(select(Vote, Pair).join(Pair, Pair.id == Vote.pair_id).order_by(Vote.id)).all()
    assert len(votes) == 3
    for (vote, pair), (prompt, left, right), (_k, _s, reason, choice, confidence) in zip(votes, shown, plan):
        assert pair.prompt == prompt and vote.choice == choice and vote.confidence == confidence
        assert vote.left_is_a == (left == pair.response_a)
        picked = {"left": left, "right": right}.get(choice)
        expected = 2 if picked is None else (0 if picked == pair.response_a else 1)
        assert vote.preference == expected  # the database maps the clicked side back to A/B
        assert vote.reasoning == reason


def test_page_fits_a_phone_and_rejects_a_bad_token(tmp_path, serve, browser):
    server = serve(f"sqlite:///{tmp_path / 'feedback.sqlite'}")
    admin = server.client()
    import_pairs(admin, "pilot", PAIRS[1:2])
    token = add_annotator(admin, "bob")
    page = browser.new_page(viewport={"width": 390, "height": 844})
    page.goto(server.url + "/?campaign=pilot")
    page.fill("#token", "not-a-token")
    page.click("button[type=submit]")
    page.wait_for_selector("#message:not([hidden])")
    assert "unknown token" in page.inner_text("#message")
    page.fill("#token", token)
    page.click("button[type=submit]")
    page.wait_for_selector("#task:not([hidden])")
    # no horizontal scrolling at phone width; the long response scrolls inside its box
    assert page.locator("html").evaluate("e => e.scrollWidth") <= 390
    assert any(box.evaluate("e => e.scrollHeight > e.clientHeight") for box in page.locator(".response").all())
    page.screenshot(path=str(tmp_path / "phone.png"), full_page=True)


def test_admin_page_lists_disables_and_rotates_accounts(tmp_path, serve, browser):
    server = serve(f"sqlite:///{tmp_path / 'feedback.sqlite'}")
    admin = server.client()
    alice_token, bob_token = add_annotator(admin, "alice"), add_annotator(admin, "bob")
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.on("dialog", lambda d: d.accept())  # "Disable alice?"
    page.goto(server.url + "/admin")
    page.fill("#token", ADMIN_TOKEN)
    page.click("#login-form button[type=submit]")
    row = page.locator("#annotators tbody tr", has_text="alice")
    expect(row).to_contain_text("active")

    row.get_by_role("button", name="Disable").click()
    expect(row).to_contain_text("disabled")
    assert server.client(alice_token).get("/api/v1/me").status_code == 401

    page.locator("#annotators tbody tr", has_text="bob").get_by_role("button", name="New token").click()
    expect(page.locator("#new-token")).to_contain_text("bob: ")
    new_bob = page.inner_text("#new-token").split("bob: ", 1)[1].strip()
    assert server.client(bob_token).get("/api/v1/me").status_code == 401
    assert server.client(new_bob).get("/api/v1/me").json()["name"] == "bob"
    page.screenshot(path=str(tmp_path / "admin-accounts.png"), full_page=True)
