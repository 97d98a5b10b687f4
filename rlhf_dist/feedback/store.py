"""Durable A/B feedback in SQLite (one file, safe across processes and restarts).

Each row is validated with the same ABFeedback schema the data loaders use, so what is
stored can always be turned into reward-model training pairs (`export_jsonl`).
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from rlhf_dist.data.readers import write_jsonl
from rlhf_dist.data.records import ABFeedback

SCHEMA = """
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    prompt TEXT NOT NULL,
    response_a TEXT NOT NULL,
    response_b TEXT NOT NULL,
    preference INTEGER NOT NULL CHECK (preference IN (0, 1, 2)),
    confidence REAL NOT NULL CHECK (confidence >= 0 AND confidence <= 1),
    reasoning TEXT NOT NULL DEFAULT '',
    annotator TEXT NOT NULL DEFAULT 'human',
    round INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL
)
"""
COLUMNS = ("prompt", "response_a", "response_b", "preference", "confidence", "reasoning")


class FeedbackStore:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute(SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30)

    def add(self, prompt: str, response_a: str, response_b: str, preference: int, confidence: float = 1.0,
            reasoning: str = "", annotator: str = "human", round_index: int = 0) -> int:
        """Validate and store one judgement; returns its id. Bad input raises ValueError naming the field."""
        row = ABFeedback(prompt=prompt, response_a=response_a, response_b=response_b, preference=preference,
                         confidence=confidence, reasoning=reasoning)
        with self._connect() as db:
            cur = db.execute(
                "INSERT INTO feedback (prompt, response_a, response_b, preference, confidence, reasoning, "
                "annotator, round, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (*(getattr(row, c) for c in COLUMNS), annotator, round_index, time.time()),
            )
            return int(cur.lastrowid)

    def records(self, round_index: int | None = None) -> list[ABFeedback]:
        query = f"SELECT {', '.join(COLUMNS)} FROM feedback"
        args: tuple = ()
        if round_index is not None:
            query, args = query + " WHERE round = ?", (round_index,)
        with self._connect() as db:
            rows = db.execute(query + " ORDER BY id", args).fetchall()
        return [ABFeedback(**dict(zip(COLUMNS, r))) for r in rows]

    def __len__(self) -> int:
        with self._connect() as db:
            return int(db.execute("SELECT COUNT(*) FROM feedback").fetchone()[0])

    def statistics(self) -> dict:
        """Counts per preference, mean confidence, and counts per round and annotator."""
        with self._connect() as db:
            total, mean_conf = db.execute("SELECT COUNT(*), AVG(confidence) FROM feedback").fetchone()
            prefs = dict(db.execute("SELECT preference, COUNT(*) FROM feedback GROUP BY preference").fetchall())
            rounds = dict(db.execute("SELECT round, COUNT(*) FROM feedback GROUP BY round").fetchall())
            annotators = dict(db.execute("SELECT annotator, COUNT(*) FROM feedback GROUP BY annotator").fetchall())
        return {
            "total": int(total), "prefer_a": prefs.get(0, 0), "prefer_b": prefs.get(1, 0), "ties": prefs.get(2, 0),
            "mean_confidence": float(mean_conf) if mean_conf is not None else None,
            "per_round": {str(k): v for k, v in rounds.items()}, "per_annotator": annotators,
        }

    def export_jsonl(self, out_path: str | Path) -> Path:
        """All feedback as an A/B JSONL file (data.pairs_format: ab)."""
        return write_jsonl(out_path, self.records())
