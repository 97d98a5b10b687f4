"""feedback.adaptive_overlap: a pair whose votes split (a tie counts) gets more votes, up to max_votes.

Over HTTP against a real server on SQLite and PostgreSQL; the pipeline's wait, the migration of an
older database, the CLI and the admin page too. The many-annotator races are in test_concurrency.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from alembic import command
from alembic.config import Config as AlembicConfig
from playwright.sync_api import expect
from sqlalchemy import select, text

from rlhf_dist.data.records import ComparisonPair
from rlhf_dist.feedback import admin, queue
from rlhf_dist.feedback.db import MIGRATIONS, make_engine, open_database, transaction
from rlhf_dist.feedback.tables import Campaign, Pair
from rlhf_dist.stages.feedback_rounds import wait_for_votes
from tests.feedback.conftest import ADMIN_TOKEN, add_annotator, import_pairs, make_pairs

pytestmark = pytest.mark.slow
# the votes each prompt gets, in order ("A" / "B" / "tie" = the response preferred): overlap 2, max_votes 4
PLAN = {0: ["A", "A"], 1: ["A", "B", "A", "A"], 2: ["A", "tie", "B", "B"]}


def _vote_as_planned(client, task: dict, votes_so_far: dict[int, int]) -> int:
    prompt = int(task["prompt"].split()[-1])  # make_pairs: "p prompt <i>", responses "p A<i>" / "p B<i>"
    wanted = PLAN[prompt][votes_so_far.get(prompt, 0)]
    votes_so_far[prompt] = votes_so_far.get(prompt, 0) + 1
    left_is_a = task["left"].split()[-1].startswith("A")
    choice = "tie" if wanted == "tie" else "left" if (wanted == "A") == left_is_a else "right"
    r = client.post("/api/v1/votes", json={"task_id": task["task_id"], "choice": choice, "confidence": 0.85,
                                           "request_id": f"r-{task['task_id']}"})
    assert r.status_code == 201, r.text
    return prompt


def _work(client, votes_so_far: dict[int, int]) -> list[int]:
    """Vote on everything the queue hands this annotator; the prompts, in order."""
    done = []
    while (r := client.get("/api/v1/tasks/next", params={"campaign": "c"})).status_code == 200:
        done.append(_vote_as_planned(client, r.json(), votes_so_far))
    assert r.status_code == 204, r.text
    return done


def _stats(admin_client) -> dict:
    return admin_client.get("/api/v1/stats", params={"campaign": "c"}).json()[0]


def test_split_pairs_get_more_votes_and_settled_ones_none(db_url, serve, tmp_path):
    server = serve(db_url)
    admin_client = server.client()
    import_pairs(admin_client, "c", make_pairs(3), overlap=2, max_votes=4)
    people = [server.client(add_annotator(admin_client, name)) for name in "abcde"]
    votes_so_far: dict[int, int] = {}

    assert _work(people[0], votes_so_far) == [0, 1, 2]
    assert _work(people[1], votes_so_far) == [0, 1, 2]  # prompt 0 agrees: settled; 1 and 2 split
    s = _stats(admin_client)
    assert (s["votes"], s["votes_wanted"], s["pairs_complete"], s["pairs_split"], s["extra_votes"]) == (6, 10, 1, 2, 0)
    assert _work(people[2], votes_so_far) == [1, 2]  # never prompt 0 again
    assert _work(people[3], votes_so_far) == [1, 2]
    assert _work(people[4], votes_so_far) == []  # every pair has its planned votes: nothing more
    assert votes_so_far == {0: 2, 1: 4, 2: 4}

    s = _stats(admin_client)
    assert (s["votes"], s["votes_wanted"], s["pairs_complete"], s["pairs_split"], s["extra_votes"]) == (10, 10, 3, 2, 4)
    assert s["max_votes"] == 4
    rows = [json.loads(line) for line in admin_client.post("/api/v1/campaigns/c/export").text.splitlines()]
    assert [(r["preference"], r["reasoning"].split(" |")[0]) for r in rows] == [
        (0, "2 vote(s): A 2, B 0, tie 0"), (0, "4 vote(s): A 3, B 1, tie 0"), (1, "4 vote(s): A 1, B 2, tie 1")]

    out = subprocess.run([sys.executable, "-m", "rlhf_dist.cli", "feedback", "stats", "--campaign", "c",
                          "--feedback.db_url", db_url], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "10/10 votes, 3/3 pairs complete" in out.stdout
    assert "adaptive overlap: 2 pairs split and got extra votes (up to 4 each): 4 votes beyond the overlap of 2" \
        in out.stdout


def test_a_tie_is_a_split_and_settings_are_checked(db_url, serve):
    server = serve(db_url, **{"adaptive_overlap.max_votes": 3})  # the server's default for new campaigns
    admin_client = server.client()
    r = admin_client.post("/api/v1/campaigns", json={"name": "bad", "overlap": 3, "max_votes": 2})
    assert (r.status_code, r.json()["field"]) == (422, "max_votes"), r.text
    r = admin_client.post("/api/v1/campaigns", json={"name": "eval", "kind": "evaluation", "max_votes": 3})
    assert r.json()["max_votes"] is None  # evaluation: a fixed overlap, each prompt weighs the same
    r = admin_client.post("/api/v1/campaigns", json={"name": "wide", "overlap": 5})
    assert r.json()["max_votes"] is None  # its own overlap is above the server's maximum: fixed

    import_pairs(admin_client, "c", make_pairs(2), overlap=1)  # max_votes from the server: 3
    assert {c["name"]: c["max_votes"] for c in admin_client.get("/api/v1/campaigns").json()}["c"] == 3
    people = [server.client(add_annotator(admin_client, name)) for name in "abcd"]
    first = people[0].get("/api/v1/tasks/next", params={"campaign": "c"}).json()
    assert people[0].post("/api/v1/votes", json={"task_id": first["task_id"], "choice": "tie", "confidence": 0.55,
                                                 "request_id": "tie-1"}).status_code == 201
    second = people[0].get("/api/v1/tasks/next", params={"campaign": "c"}).json()
    assert people[0].post("/api/v1/votes", json={"task_id": second["task_id"], "choice": "left",
                                                 "confidence": 0.85, "request_id": "left-1"}).status_code == 201
    for person in people[1:3]:  # the tied pair, and only it, goes out twice more
        task = person.get("/api/v1/tasks/next", params={"campaign": "c"}).json()
        assert task["prompt"] == first["prompt"]
        assert person.post("/api/v1/votes", json={"task_id": task["task_id"], "choice": "left",
                                                  "confidence": 0.7, "request_id": "x"}).status_code == 201
    assert people[3].get("/api/v1/tasks/next", params={"campaign": "c"}).status_code == 204
    s = _stats(admin_client)
    assert (s["votes"], s["pairs_complete"], s["pairs_split"], s["extra_votes"]) == (4, 2, 1, 2)


def test_bad_settings_are_one_line_and_write_nothing(tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"prompt": "p", "response_a": "a", "response_b": "b"}) + "\n")
    db = tmp_path / "fb.sqlite"
    out = subprocess.run([sys.executable, "-m", "rlhf_dist.cli", "feedback", "import", str(pairs), "--campaign", "c",
                          "--feedback.db_url", f"sqlite:///{db}", "--feedback.overlap", "3",
                          "--feedback.adaptive_overlap.max_votes", "2"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "--feedback.adaptive_overlap.max_votes=2: feedback.adaptive_overlap: max_votes (2) must be at least " \
        "feedback.overlap (3)" in out.stderr
    assert not db.exists()
    out = subprocess.run([sys.executable, "-m", "rlhf_dist.cli", "config", "validate", "--feedback.source",
                          "service-simulated", "--feedback.simulated.count", "3",
                          "--feedback.adaptive_overlap.max_votes", "4"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stdout + out.stderr
    assert "feedback.simulated.count (3) is below the 4 different annotators" in out.stderr


def _in_process_vote(sessions, token: str, campaign: str, choice: str) -> None:
    user = admin.annotator_for_token(sessions, token)
    task = queue.next_task(sessions, user.id, campaign, 60)
    queue.record_vote(sessions, user.id, task.task_id, choice, 0.9, "", f"{user.name}-{task.task_id}")


def test_a_round_waits_until_every_pair_is_settled(db_url):
    sessions = open_database(db_url)
    admin.add_pairs(sessions, "c", [ComparisonPair(prompt=f"q{i}", response_a="a", response_b="b") for i in (0, 1)],
                    overlap=1, max_votes=2)
    x, y = admin.add_annotator(sessions, "x"), admin.add_annotator(sessions, "y")
    _in_process_vote(sessions, x, "c", "tie")  # q0: split, wants 2 votes
    _in_process_vote(sessions, x, "c", "left")  # q1: settled with 1
    assert queue.campaign_totals(sessions, "c") == {"votes": 2, "wanted": 3, "pairs": 2, "settled": 1}
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="2 of 3 votes \\(1 of 2 pairs settled\\)"):
        wait_for_votes(sessions, "c", None, timeout_s=1.0, show_progress=False)  # 2 = pairs x overlap: not enough
    assert time.monotonic() - started >= 1.0
    assert wait_for_votes(sessions, "c", 2, timeout_s=1.0, show_progress=False) == 2  # votes_per_round: 2
    _in_process_vote(sessions, y, "c", "left")
    assert wait_for_votes(sessions, "c", None, timeout_s=1.0, show_progress=False) == 3


def test_an_older_database_keeps_its_overlap(db_url):
    """A database made by revision 0002 (before adaptive overlap): its pairs keep their campaign's overlap."""
    engine = make_engine(db_url)
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.connect() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0002")
        conn.execute(text("INSERT INTO campaign (id, name, kind, overlap, created_at) "
                          "VALUES (1, 'old', 'training', 3, 0)"))
        conn.execute(text("INSERT INTO pair (id, campaign_id, prompt, response_a, response_b, source_a, source_b, "
                          "queue_rank, votes_done, complete, created_at) VALUES (1, 1, 'p', 'a', 'b', '', '', 0, 0, "
                          "false, 0)"))
        conn.commit()
    engine.dispose()
    sessions = open_database(db_url)
    with transaction(sessions) as session:
        assert session.scalar(select(Pair.votes_wanted)) == 3
        assert session.scalar(select(Campaign.max_votes)) is None
    assert queue.campaign_totals(sessions, "old") == {"votes": 0, "wanted": 3, "pairs": 1, "settled": 0}


def test_admin_page_sets_and_shows_extra_votes(tmp_path, serve, browser):
    server = serve(f"sqlite:///{tmp_path / 'feedback.sqlite'}")
    admin_client = server.client()
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(p) + "\n" for p in make_pairs(3)))
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(server.url + "/admin")
    page.fill("#token", ADMIN_TOKEN)
    page.click("#login-form button[type=submit]")
    page.fill("#import-campaign", "c")
    page.fill("#import-overlap", "2")
    page.fill("#import-max-votes", "4")
    page.set_input_files("#import-file", str(pairs))
    page.click("#import-form button[type=submit]")
    row = page.locator("#stats tbody tr", has_text="c")
    expect(row).to_contain_text("0 pairs split: +0 votes (up to 4 each)")
    assert {c["name"]: (c["overlap"], c["max_votes"]) for c in admin_client.get("/api/v1/campaigns").json()} == {
        "c": (2, 4)}

    votes_so_far: dict[int, int] = {}
    for name in "abcd":
        _work(server.client(add_annotator(admin_client, name)), votes_so_far)
    page.reload()
    page.fill("#token", ADMIN_TOKEN)
    page.click("#login-form button[type=submit]")
    expect(page.locator("#stats tbody tr", has_text="c")).to_contain_text("2 pairs split: +4 votes (up to 4 each)")
    page.screenshot(path=str(tmp_path / "admin-adaptive.png"), full_page=True)
