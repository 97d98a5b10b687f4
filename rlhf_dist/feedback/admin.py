"""What admins do: annotators, campaigns, pair imports, statistics and versioned exports."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import case, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from rlhf_dist.algo.agreement import krippendorff_alpha_nominal, pairwise_agreement
from rlhf_dist.data.readers import write_jsonl
from rlhf_dist.data.records import ABFeedback, ComparisonPair
from rlhf_dist.feedback.aggregate import Aggregate, VoteRow, aggregate_votes
from rlhf_dist.feedback.db import transaction
from rlhf_dist.feedback.quality import VoteFact, annotator_quality, position_bias
from rlhf_dist.feedback.queue import FeedbackError, find_campaign
from rlhf_dist.feedback.tables import Annotator, Campaign, Pair, Snapshot, Vote
from rlhf_dist.feedback.text import ID_MAX, check_name, control_problem

Quality = tuple[float, str]  # (feedback.min_reliability, feedback.unreliable)
ENV_ADMIN = "admin"  # the user whose token is the value of feedback.admin_token_env, and only that
ADMIN_TOKEN_MIN = 32


def hash_token(token: str) -> str:
    # tokens are 256-bit random strings, so a plain sha256 cannot be brute-forced
    return hashlib.sha256(token.encode()).hexdigest()


def _check_name(field: str, name: str) -> str:
    try:
        return check_name(name)
    except ValueError as err:
        raise FeedbackError(422, field, str(err)) from None


def env_admin_token(variable: str) -> str | None:
    """The admin token from the environment (None when unset or empty); a short one is refused."""
    token = os.environ.get(variable) or None
    if token is not None and len(token) < ADMIN_TOKEN_MIN:
        raise FeedbackError(2, variable, f"the admin token is {len(token)} characters; use at least "
                            f"{ADMIN_TOKEN_MIN} (make one with: python -c "
                            "'import secrets; print(secrets.token_urlsafe(32))')")
    return token


def prepare_env_admin(sessions: sessionmaker[Session], present: bool) -> None:
    """User 'admin' exists while the environment holds its token, which is never stored: a token that earlier
    versions stored for it is cleared here, so it stops working when the variable is unset."""
    with transaction(sessions) as session:
        user = session.scalar(select(Annotator).where(Annotator.name == ENV_ADMIN))
        if user is None and present:
            session.add(Annotator(name=ENV_ADMIN, role="admin", token_hash=None, created_at=time.time()))
        elif user is not None:
            user.role, user.token_hash, user.disabled_at = "admin", None, None


def annotator_for_token(sessions: sessionmaker[Session], token: str, env_token: str | None = None) -> Annotator | None:
    """The enabled annotator whose token this is, or None. Looked up on every request, so `disable` and
    `rotate` (here or from the CLI, another process) take effect at once."""
    with transaction(sessions) as session:
        if env_token is not None and hmac.compare_digest(token.encode(), env_token.encode()):
            return session.scalar(select(Annotator).where(Annotator.name == ENV_ADMIN))
        return session.scalar(select(Annotator).where(Annotator.token_hash == hash_token(token),
                                                      Annotator.disabled_at.is_(None)))


def _find_annotator(session: Session, name: str) -> Annotator:
    problem = control_problem(name)
    if problem is not None:
        raise FeedbackError(422, "name", problem)
    user = session.scalar(select(Annotator).where(Annotator.name == name))
    if user is None:
        known = ", ".join(session.scalars(select(Annotator.name).order_by(Annotator.name))) or "none yet"
        raise FeedbackError(404, "name", f"no annotator named {name!r} (known: {known})")
    if user.name == ENV_ADMIN:
        raise FeedbackError(409, "name", f"the token of {ENV_ADMIN!r} is the value of the environment variable "
                            "named by feedback.admin_token_env (default RLHF_DIST_FEEDBACK_ADMIN_TOKEN): change "
                            "or unset it and restart the service")
    return user


def list_annotators(sessions: sessionmaker[Session]) -> list[dict]:
    """Every account: name, role, status (active | disabled | environment | no login), votes, created_at."""
    with transaction(sessions) as session:
        votes = dict(session.execute(select(Vote.annotator_id, func.count()).group_by(Vote.annotator_id)).all())
        out = []
        for user in session.scalars(select(Annotator).order_by(Annotator.id)):
            status = ("environment" if user.name == ENV_ADMIN else "disabled" if user.disabled_at is not None
                      else "active" if user.token_hash is not None else "no login")
            out.append({"name": user.name, "role": user.role, "status": status, "votes": votes.get(user.id, 0),
                        "created_at": user.created_at})
        return out


def disable_annotator(sessions: sessionmaker[Session], name: str) -> dict:
    """The account's token stops working at once; its votes stay. `rotate` gives it a new token."""
    with transaction(sessions) as session:
        user = _find_annotator(session, name)
        user.token_hash, user.disabled_at = None, user.disabled_at or time.time()
    return {"name": name, "role": user.role, "status": "disabled"}


def rotate_token(sessions: sessionmaker[Session], name: str) -> str:
    """A new token for the account (enabled again if it was disabled); the old one stops working at once."""
    token = secrets.token_urlsafe(32)
    with transaction(sessions) as session:
        user = _find_annotator(session, name)
        user.token_hash, user.disabled_at = hash_token(token), None
    return token


def add_annotator(sessions: sessionmaker[Session], name: str, role: str = "annotator") -> str:
    """Create an annotator; returns the token (stored only as its hash, so shown once)."""
    name = _check_name("name", name)
    if name == ENV_ADMIN:
        raise FeedbackError(409, "name", f"{ENV_ADMIN!r} is reserved for the admin token of the environment "
                            "(feedback.admin_token_env); pick another name")
    if role not in ("admin", "annotator"):
        raise FeedbackError(422, "role", f"must be 'admin' or 'annotator', got {role!r}")
    token = secrets.token_urlsafe(32)
    try:
        with transaction(sessions) as session:
            session.add(Annotator(name=name, role=role, token_hash=hash_token(token), created_at=time.time()))
    except IntegrityError:
        raise FeedbackError(409, "name", f"an annotator named {name!r} exists already") from None
    return token


def ensure_annotator(sessions: sessionmaker[Session], name: str, token: str, role: str = "annotator") -> None:
    """Create `name`, or give it this token and role, enabled (the pipeline's simulated annotators)."""
    with transaction(sessions) as session:
        user = session.scalar(select(Annotator).where(Annotator.name == name))
        if user is None:
            session.add(Annotator(name=name, role=role, token_hash=hash_token(token), created_at=time.time()))
        else:
            user.role, user.token_hash, user.disabled_at = role, hash_token(token), None


def get_or_create_campaign(session: Session, name: str, kind: str, overlap: int,
                           round_index: int | None = None, max_votes: int | None = None) -> Campaign:
    """The campaign, created with these settings when new (an existing one keeps its own).

    max_votes (feedback.adaptive_overlap.max_votes): votes for pairs whose votes split; training campaigns
    only, so every prompt of an evaluation campaign weighs the same in its win rate."""
    name = _check_name("campaign", name)
    if kind not in ("training", "evaluation"):
        raise FeedbackError(422, "kind", f"must be 'training' or 'evaluation', got {kind!r}")
    if max_votes is not None and max_votes < overlap:
        raise FeedbackError(422, "max_votes", f"must be at least the overlap ({overlap}), got {max_votes}")
    campaign = session.scalar(select(Campaign).where(Campaign.name == name))
    if campaign is None:
        campaign = Campaign(name=name, kind=kind, overlap=overlap, round_index=round_index, created_at=time.time(),
                            max_votes=max_votes if kind == "training" else None)
        session.add(campaign)
        session.flush()
    return campaign


def _logprobs_json(pair: ComparisonPair) -> str | None:
    if pair.logprobs_a is None and pair.logprobs_b is None:
        return None
    return json.dumps({"a": pair.logprobs_a, "b": pair.logprobs_b})


def add_pairs(sessions: sessionmaker[Session], campaign_name: str, pairs: Sequence[ComparisonPair],
              kind: str = "training", overlap: int = 1, ranks: Sequence[float] | None = None,
              max_votes: int | None = None) -> int:
    """Add validated pairs to a campaign (created when missing, with overlap and max_votes), all or none;
    returns the count.

    ranks: each pair's queue_rank (lower is handed out first; active selection sets it), default 0.
    """
    now = time.time()
    with transaction(sessions) as session:
        campaign = get_or_create_campaign(session, campaign_name, kind, overlap, max_votes=max_votes)
        session.add_all(Pair(campaign_id=campaign.id, prompt=p.prompt, response_a=p.response_a,
                             response_b=p.response_b, source_a=p.source_a, source_b=p.source_b,
                             sampling_json=json.dumps(p.sampling) if p.sampling is not None else None,
                             seed=p.seed, gold=p.gold, logprobs_json=_logprobs_json(p), queue_rank=rank,
                             votes_done=0, votes_wanted=campaign.overlap, complete=False, created_at=now)
                        for p, rank in zip(pairs, ranks or [0.0] * len(pairs)))
    return len(pairs)


def _votes_by_pair(session: Session, campaign: Campaign, max_vote_id: int | None = None) -> dict[int, list[Vote]]:
    query = (select(Vote).join(Pair, Pair.id == Vote.pair_id).where(Pair.campaign_id == campaign.id)
             .order_by(Vote.id))
    if max_vote_id is not None:
        query = query.where(Vote.id <= max_vote_id)
    grouped: dict[int, list[Vote]] = defaultdict(list)
    for vote in session.scalars(query):
        grouped[vote.pair_id].append(vote)
    return grouped


def _facts(session: Session, by_pair: dict[int, list[Vote]]) -> list[VoteFact]:
    names = {i: n for i, n in session.execute(select(Annotator.id, Annotator.name))}
    gold = {i: g for i, g in session.execute(select(Pair.id, Pair.gold).where(Pair.id.in_(list(by_pair))))}
    return [VoteFact(names[v.annotator_id], v.pair_id, v.preference, v.choice, gold[v.pair_id])
            for vs in by_pair.values() for v in vs]


def _overlap_stats(session: Session, campaign: Campaign) -> dict:
    """Pairs and their planned votes: settled (complete), split (their votes split: given max_votes) and the
    votes beyond the overlap that those pairs have received so far."""
    pairs, wanted, settled, split, extra = session.execute(
        select(func.count(), func.coalesce(func.sum(Pair.votes_wanted), 0),
               func.coalesce(func.sum(case((Pair.complete, 1), else_=0)), 0),
               func.coalesce(func.sum(case((Pair.votes_wanted > campaign.overlap, 1), else_=0)), 0),
               func.coalesce(func.sum(case((Pair.votes_done > campaign.overlap,
                                            Pair.votes_done - campaign.overlap), else_=0)), 0))
        .where(Pair.campaign_id == campaign.id)).one()
    return {"pairs": int(pairs), "votes_wanted": int(wanted), "pairs_complete": int(settled),
            "pairs_split": int(split), "extra_votes": int(extra)}


def campaign_stats(session: Session, campaign: Campaign, min_reliability: float = 0.0) -> dict:
    """Progress (with adaptive overlap: pairs split and their extra votes), per-annotator quality, agreement
    between annotators and position bias."""
    counts = _overlap_stats(session, campaign)
    by_pair = _votes_by_pair(session, campaign)
    votes = [v for vs in by_pair.values() for v in vs]
    facts = _facts(session, by_pair)
    quality = annotator_quality(facts, min_reliability)
    units = [[v.preference for v in vs] for vs in by_pair.values()]
    alpha = krippendorff_alpha_nominal(units)
    agreement = pairwise_agreement(units)
    bias = position_bias(facts)
    return {
        "campaign": campaign.name, "kind": campaign.kind, "overlap": campaign.overlap,
        "max_votes": campaign.max_votes, **counts, "votes": len(votes),
        "per_annotator": {name: q["votes"] for name, q in quality.items()},
        "annotators": quality,
        "flagged": [name for name, q in quality.items() if q["flagged"]],
        "choices": {"A": sum(v.preference == 0 for v in votes), "B": sum(v.preference == 1 for v in votes),
                    "tie": sum(v.preference == 2 for v in votes)},
        "krippendorff_alpha": None if alpha is None else round(alpha, 4),
        "pairwise_agreement": None if agreement is None else round(agreement, 4),
        "left_rate": bias["left_rate"], "decisive_votes": bias["decisive_votes"],
        "left_binomial_p": bias["binomial_p"],
    }


def all_stats(sessions: sessionmaker[Session], campaign_name: str | None = None,
              min_reliability: float = 0.0) -> list[dict]:
    with transaction(sessions) as session:
        if campaign_name is not None:
            return [campaign_stats(session, find_campaign(session, campaign_name), min_reliability)]
        return [campaign_stats(session, c, min_reliability)
                for c in session.scalars(select(Campaign).order_by(Campaign.id))]


def aggregated_rows(session: Session, campaign: Campaign, how: Aggregate, max_vote_id: int | None = None,
                    quality: Quality | None = None) -> tuple[list[ABFeedback], int]:
    """One A/B row per voted pair (in pair order) and the number of votes behind them.

    quality: (min_reliability, keep | downweight | drop) for flagged annotators' votes, judged on the
    same votes (so a versioned re-export gives the same rows).
    """
    by_pair = _votes_by_pair(session, campaign, max_vote_id)
    weight: dict[str, float] = {}
    names = {i: n for i, n in session.execute(select(Annotator.id, Annotator.name))}
    if quality is not None and quality[1] != "keep":
        for name, q in annotator_quality(_facts(session, by_pair), quality[0]).items():
            if q["flagged"]:
                weight[name] = 0.0 if quality[1] == "drop" else q["reliability"]
    kept = {pid: [v for v in vs if weight.get(names[v.annotator_id], 1.0) > 0] for pid, vs in by_pair.items()}
    kept = {pid: vs for pid, vs in kept.items() if vs}
    pairs = {p.id: p for p in session.scalars(select(Pair).where(Pair.id.in_(list(kept))).order_by(Pair.id))}
    rows = [aggregate_votes(pairs[pid].prompt, pairs[pid].response_a, pairs[pid].response_b,
                            [VoteRow(v.preference, v.confidence * weight.get(names[v.annotator_id], 1.0), v.reasoning)
                             for v in kept[pid]], how)
            for pid in sorted(kept)]
    return rows, sum(len(vs) for vs in kept.values())


def _check_out_path(out_path: Path) -> None:
    for path in (out_path, Path(f"{out_path}.meta.json")):
        if path.is_dir():
            raise FeedbackError(2, "out", f"{path} is a directory; name a file")
        if path.parent.exists() and not path.parent.is_dir():
            raise FeedbackError(2, "out", f"{path.parent} is not a directory")


def export_snapshot(sessions: sessionmaker[Session], campaign_name: str, out_path: str | Path, how: Aggregate,
                    version: int | None = None, quality: Quality | None = None) -> dict:
    """Write the campaign's votes as A/B JSONL (data.pairs_format: ab) and record it as a new version.

    With `version`, re-export exactly the votes of that earlier snapshot (same rows, same sha256).
    The file and its .meta.json are written (as temp files) before the version is committed and moved into
    place after: an export that fails leaves no recorded version behind.
    """
    out_path = Path(out_path)
    if version is not None and not 1 <= version <= ID_MAX:
        raise FeedbackError(422, "version", f"must be 1-{ID_MAX}, got {version}")
    _check_out_path(out_path)
    tmp_rows, tmp_meta = Path(f"{out_path}.tmp{os.getpid()}"), Path(f"{out_path}.meta.json.tmp{os.getpid()}")
    try:
        with transaction(sessions) as session:
            campaign = find_campaign(session, campaign_name)
            how, max_vote_id, snap = _export_target(session, campaign, how, version)
            rows, n_votes = aggregated_rows(session, campaign, how, max_vote_id, quality)
            digest = hashlib.sha256(write_jsonl(tmp_rows, rows).read_bytes()).hexdigest()
            if snap is None:
                version = 1 + (session.scalar(select(func.max(Snapshot.version))
                                              .where(Snapshot.campaign_id == campaign.id)) or 0)
                session.add(Snapshot(campaign_id=campaign.id, version=version, max_vote_id=max_vote_id,
                                     aggregate=how, n_votes=n_votes, n_rows=len(rows), sha256=digest,
                                     created_at=time.time()))
            meta = {"campaign": campaign_name, "version": version, "aggregate": how, "votes": n_votes,
                    "rows": len(rows), "max_vote_id": max_vote_id, "sha256": digest, "path": str(out_path),
                    "unreliable": None if quality is None else {"min_reliability": quality[0],
                                                                "policy": quality[1]}}
            tmp_meta.write_text(json.dumps(meta, indent=2) + "\n")
            session.flush()  # a version taken by a concurrent export fails here, before anything is moved
        os.replace(tmp_rows, out_path)
        os.replace(tmp_meta, f"{out_path}.meta.json")
    finally:
        tmp_rows.unlink(missing_ok=True)
        tmp_meta.unlink(missing_ok=True)
    return meta


def _export_target(session: Session, campaign: Campaign, how: Aggregate,
                   version: int | None) -> tuple[Aggregate, int, Snapshot | None]:
    """(aggregate, last vote id, earlier snapshot or None) of a new export or of a re-export of `version`."""
    if version is not None:
        snap = session.scalar(select(Snapshot).where(Snapshot.campaign_id == campaign.id,
                                                     Snapshot.version == version))
        if snap is None:
            raise FeedbackError(404, "version", f"campaign {campaign.name!r} has no snapshot version {version}")
        return snap.aggregate, snap.max_vote_id, snap  # type: ignore[return-value]
    max_vote_id = session.scalar(select(func.max(Vote.id)).join(Pair, Pair.id == Vote.pair_id)
                                 .where(Pair.campaign_id == campaign.id))
    if max_vote_id is None:
        raise FeedbackError(409, "campaign", f"campaign {campaign.name!r} has no votes yet: nothing to export")
    return how, max_vote_id, None
