"""The feedback service: a FastAPI app over the feedback database (served by uvicorn).

    annotator page  GET /            admin page  GET /admin         OpenAPI docs  GET /docs, /redoc
    GET  /api/v1/tasks/next?campaign=NAME   -> {task_id, prompt, left, right, ...} | 204
    POST /api/v1/votes {task_id, choice, confidence, reasoning, request_id} -> 201 (200: repeated request_id)
Every /api route needs `Authorization: Bearer <token>`; admin routes need an admin's token.
/docs and /redoc load Swagger UI and ReDoc from this service (the fastapi-offline package): no CDN, so they
work without internet.
"""


import random
import tempfile
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import quote

from fastapi import Depends, FastAPI, Header, Query, Request, Response
from fastapi import Path as InPath
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select, text

from rlhf_dist.config.schema_feedback import FeedbackConfig
from rlhf_dist.data.validate import DataValidationError
from rlhf_dist.feedback import admin, queue
from rlhf_dist.feedback.db import open_database, transaction
from rlhf_dist.feedback.queue import FeedbackError
from rlhf_dist.feedback.security import GuardMiddleware, LoginGuard, RateLimiter, TTLCache
from rlhf_dist.feedback.tables import Annotator, Campaign, Pair, Vote
from rlhf_dist.feedback.text import FreeText, Id, Lookup, Name, load_pairs

STATIC = Path(__file__).parent / "static"
IMPORT_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")


class VoteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    task_id: Id = Field(..., strict=True, description="From GET /api/v1/tasks/next.")
    choice: Literal["left", "right", "tie"] = Field(..., description="The response shown on the left, right, or a tie.")
    confidence: float = Field(..., strict=True, ge=0.0, le=1.0, allow_inf_nan=False,
                              description="How sure: the page sends 0.55 / 0.7 / 0.85 / 1.0 for negligibly / "
                              "slightly / clearly / much better.")
    reasoning: FreeText = Field("", max_length=10_000, description="Why (optional; no control characters "
                                "but newlines and tabs).")
    request_id: str = Field(..., min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:-]+$",
                            description="Client-chosen id; retrying with the same id never adds a second vote.")


class CampaignIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Name = Field(..., description="1-200 printable characters, no '/'.")
    kind: Literal["training", "evaluation"] = "training"
    overlap: int | None = Field(None, ge=1, le=100, description="Votes per pair; None: feedback.overlap.")
    max_votes: int | None = Field(None, ge=1, le=100, description="Votes for a pair whose votes split (training "
                                  "campaigns; at least the overlap); None: feedback.adaptive_overlap.max_votes.")


class AnnotatorIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Name = Field(..., description="1-200 printable characters, no '/'.")
    role: Literal["admin", "annotator"] = "annotator"


def create_app(cfg: FeedbackConfig, db_url: str) -> FastAPI:
    """The service over db_url (migrated on start). The admin token is read from cfg.admin_token_env here,
    checked (FeedbackError when short) before anything is opened, and never stored."""
    env_token = admin.env_admin_token(cfg.admin_token_env)
    sessions = open_database(db_url)
    admin.prepare_env_admin(sessions, present=env_token is not None)
    app = FastAPIOffline(title="rlhf-dist feedback service", version="1",
                         description="People compare two responses; every vote lands exactly once.")
    app.add_middleware(GuardMiddleware, max_body_bytes=cfg.max_body_kb * 1024,
                       max_import_bytes=cfg.max_import_mb * 1024 * 1024)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    _add_error_handlers(app)
    user_dep, admin_dep = _auth_dependencies(sessions, cfg, env_token)
    register_annotator_routes(app, sessions, cfg, user_dep)
    register_admin_routes(app, sessions, cfg, admin_dep)
    register_account_routes(app, sessions, admin_dep)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    """Every refusal is JSON {"error": ..., "field": ...}: the field names the input at fault."""

    @app.exception_handler(FeedbackError)
    async def _feedback_error(_request: Request, err: FeedbackError) -> JSONResponse:
        return JSONResponse({"error": err.message, "field": err.field}, status_code=err.status)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, err: RequestValidationError) -> JSONResponse:
        first = err.errors()[0]
        field = ".".join(str(p) for p in first["loc"] if p not in ("body", "query", "path")) or "body"
        message = first["msg"].removeprefix("Value error, ")
        return JSONResponse({"error": f"{field}: {message}", "field": field}, status_code=422)


def _auth_dependencies(sessions, cfg: FeedbackConfig, env_token: str | None):  # noqa: ANN001, ANN202
    """Bearer-token user and admin dependencies (FastAPI types), with the per-token rate limit and the
    per-address limit on wrong tokens. The token is looked up on every request: no cache that would let a
    disabled or replaced token work a little longer."""
    limiter = RateLimiter(cfg.rate_limit_per_minute)
    guard = LoginGuard(cfg.login_failures_per_minute)

    def current_user(request: Request, authorization: Annotated[str | None, Header()] = None) -> Annotator:
        address = request.client.host if request.client else "unknown"
        if guard.blocked(address):
            raise FeedbackError(429, "authorization", f"{cfg.login_failures_per_minute} wrong tokens from "
                                f"{address} within a minute (feedback.login_failures_per_minute); wait a minute")
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise FeedbackError(401, "authorization", "send 'Authorization: Bearer <token>'")
        user = admin.annotator_for_token(sessions, token.strip(), env_token)
        if user is None:
            guard.failed(address)
            raise FeedbackError(401, "authorization", "unknown token (or one that was disabled or replaced)")
        if not limiter.allow(str(user.id)):  # per account: one token each
            raise FeedbackError(429, "authorization", f"over {cfg.rate_limit_per_minute} requests a minute; slow down")
        return user

    def current_admin(user: Annotated[Annotator, Depends(current_user)]) -> Annotator:
        if user.role != "admin":
            raise FeedbackError(403, "authorization", f"{user.name!r} is an annotator; this needs an admin token")
        return user

    return Annotated[Annotator, Depends(current_user)], Annotated[Annotator, Depends(current_admin)]


def register_annotator_routes(app: FastAPI, sessions, cfg: FeedbackConfig, User) -> None:  # noqa: ANN001, N803
    """The pages, health check and the annotators' API (tasks, votes, skips, progress, own votes)."""
    rng = random.Random()
    totals = TTLCache(seconds=2.0)  # campaign -> vote counts: a scan of its pairs

    @app.get("/healthz", tags=["service"])
    def healthz() -> dict:
        with transaction(sessions) as session:
            session.execute(text("SELECT 1"))
        return {"status": "ok"}

    @app.get("/", include_in_schema=False)
    def annotator_page() -> FileResponse:
        return FileResponse(STATIC / "annotate.html")

    @app.get("/admin", include_in_schema=False)
    def admin_page() -> FileResponse:
        return FileResponse(STATIC / "admin.html")

    @app.get("/api/v1/me", tags=["annotators"])
    def me(user: User) -> dict:
        return {"name": user.name, "role": user.role}

    @app.get("/api/v1/campaigns", tags=["annotators"])
    def campaigns(_user: User) -> list[dict]:
        with transaction(sessions) as session:
            return [{"name": c.name, "kind": c.kind, "overlap": c.overlap, "max_votes": c.max_votes}
                    for c in session.scalars(select(Campaign).order_by(Campaign.id))]

    @app.get("/api/v1/tasks/next", tags=["annotators"], responses={204: {"description": "Nothing left for you."}})
    def next_task(user: User, campaign: Annotated[Lookup, Query()]) -> Response:
        task = queue.next_task(sessions, user.id, campaign, cfg.lease_seconds, rng)
        if task is None:
            return Response(status_code=204)
        return JSONResponse({"task_id": task.task_id, "campaign": task.campaign, "prompt": task.prompt,
                             "left": task.left, "right": task.right, "expires_at": task.expires_at,
                             "progress": progress(user, campaign)})

    @app.post("/api/v1/votes", tags=["annotators"], status_code=201)
    def vote(user: User, body: VoteIn) -> JSONResponse:
        payload, created = queue.record_vote(sessions, user.id, body.task_id, body.choice, body.confidence,
                                             body.reasoning, body.request_id)
        return JSONResponse(payload, status_code=201 if created else 200)

    @app.post("/api/v1/tasks/{task_id}/skip", tags=["annotators"])
    def skip(user: User, task_id: Annotated[Id, InPath()]) -> dict:
        queue.skip_task(sessions, user.id, task_id)
        return {"task_id": task_id, "status": "skipped"}

    def progress(user: Annotator, campaign: str) -> dict:
        return {**totals.get(campaign, lambda c: queue.campaign_totals(sessions, c)),
                "yours": queue.votes_by(sessions, user.id, campaign)}

    @app.get("/api/v1/progress", tags=["annotators"])
    def my_progress(user: User, campaign: Annotated[Lookup, Query()]) -> dict:
        """Votes collected and wanted in the campaign (refreshed every 2 s) and yours."""
        return progress(user, campaign)

    @app.get("/api/v1/votes", tags=["annotators"])
    def votes(user: User, annotator: Annotated[Lookup | None, Query()] = None,
              campaign: Annotated[Lookup | None, Query()] = None) -> list[dict]:
        """Your own votes; an admin may read anyone's (`annotator=NAME`) or everyone's."""
        if annotator is not None and annotator != user.name and user.role != "admin":
            raise FeedbackError(403, "annotator", "only admins read other annotators' votes")
        name = annotator if annotator is not None else (None if user.role == "admin" else user.name)
        with transaction(sessions) as session:
            query = select(Vote, Annotator.name).join(Annotator, Annotator.id == Vote.annotator_id)
            if name is not None:
                query = query.where(Annotator.name == name)
            if campaign is not None:
                camp = queue.find_campaign(session, campaign)
                query = query.where(Vote.pair_id.in_(select(Pair.id).where(Pair.campaign_id == camp.id)))
            return [{**queue.vote_payload(v), "annotator": n} for v, n in session.execute(query.order_by(Vote.id))]


def register_admin_routes(app: FastAPI, sessions, cfg: FeedbackConfig, Admin) -> None:  # noqa: ANN001, N803
    @app.post("/api/v1/annotators", tags=["admin"], status_code=201)
    def add_annotator(_admin: Admin, body: AnnotatorIn) -> dict:
        """Create an annotator; the token is in this response only (the service keeps its hash)."""
        return {"name": body.name, "role": body.role, "token": admin.add_annotator(sessions, body.name, body.role)}

    @app.post("/api/v1/campaigns", tags=["admin"], status_code=201)
    def create_campaign(_admin: Admin, body: CampaignIn) -> dict:
        overlap = body.overlap or cfg.overlap
        max_votes = body.max_votes or cfg.adaptive_overlap.max_votes
        if body.max_votes is None and max_votes is not None and max_votes < overlap:
            max_votes = None  # this campaign's own overlap is above the configured maximum: a fixed overlap
        with transaction(sessions) as session:
            if session.scalar(select(Campaign).where(Campaign.name == body.name)) is not None:
                raise FeedbackError(409, "name", f"a campaign named {body.name!r} exists already")
            campaign = admin.get_or_create_campaign(session, body.name, body.kind, overlap, max_votes=max_votes)
            return {"name": body.name, "kind": body.kind, "overlap": overlap, "max_votes": campaign.max_votes}

    @app.post("/api/v1/campaigns/{name}/import", tags=["admin"], status_code=201)
    async def import_pairs(_admin: Admin, name: Annotated[Lookup, InPath()], request: Request,
                           filename: Annotated[Lookup, Query()]) -> dict:
        """Add pairs from an uploaded file (body = the file; JSONL, JSON, CSV or Parquet by `filename`)."""
        suffix = Path(filename).suffix.lower()
        if suffix not in IMPORT_SUFFIXES:
            raise FeedbackError(422, "filename", f"{filename!r}: expected one of {', '.join(IMPORT_SUFFIXES)}")
        body = await request.body()
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / Path(filename).name
            path.write_bytes(body)
            try:
                rows = load_pairs(str(path)).records
            except DataValidationError as err:
                raise FeedbackError(422, "file", str(err).replace(str(path), filename)) from None
        if not rows:
            raise FeedbackError(422, "file", f"{filename}: no pairs in the file")
        count = admin.add_pairs(sessions, name, rows, overlap=cfg.overlap, max_votes=cfg.adaptive_overlap.max_votes)
        return {"campaign": name, "added": count}

    @app.get("/api/v1/stats", tags=["admin"])
    def stats(_admin: Admin, campaign: Annotated[Lookup | None, Query()] = None) -> list[dict]:
        return admin.all_stats(sessions, campaign, cfg.min_reliability)

    @app.post("/api/v1/campaigns/{name}/export", tags=["admin"])
    def export(_admin: Admin, name: Annotated[Lookup, InPath()],
               aggregate: Literal["majority", "soft"] | None = None) -> Response:
        """A new versioned snapshot as A/B JSONL (`data.pairs_format: ab`); version and sha256 in the headers."""
        with tempfile.TemporaryDirectory() as tmp:
            meta = admin.export_snapshot(sessions, name, Path(tmp) / "export.jsonl", aggregate or cfg.aggregate,
                                         quality=(cfg.min_reliability, cfg.unreliable))
            content = Path(meta["path"]).read_bytes()
        return Response(content, media_type="application/x-ndjson", headers={
            "x-snapshot-version": str(meta["version"]), "x-snapshot-sha256": meta["sha256"],
            "content-disposition": attachment(f"{name}-v{meta['version']}.jsonl")})


def attachment(filename: str) -> str:
    """Content-Disposition for any file name (RFC 6266): an ASCII fallback and the exact name, UTF-8 encoded."""
    fallback = "".join(ch if " " <= ch <= "~" and ch not in '"\\' else "_" for ch in filename)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


def register_account_routes(app: FastAPI, sessions, Admin) -> None:  # noqa: ANN001, N803
    """List accounts, disable one, give one a new token: each takes effect on the very next request."""

    @app.get("/api/v1/annotators", tags=["admin"])
    def annotators(_admin: Admin) -> list[dict]:
        """Every account: name, role, status (active, disabled, environment, no login) and votes."""
        return admin.list_annotators(sessions)

    @app.post("/api/v1/annotators/{name}/disable", tags=["admin"])
    def disable(_admin: Admin, name: Annotated[Lookup, InPath()]) -> dict:
        """The account's token is refused from now on (401); its votes stay."""
        return admin.disable_annotator(sessions, name)

    @app.post("/api/v1/annotators/{name}/rotate", tags=["admin"])
    def rotate(_admin: Admin, name: Annotated[Lookup, InPath()]) -> dict:
        """A new token (in this response only); the old one is refused from now on. Enables a disabled account."""
        return {"name": name, "token": admin.rotate_token(sessions, name)}
