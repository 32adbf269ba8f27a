"""Resumable study logs shared by the scripts: one JSON row per finished job, tagged with its configuration."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path


def config_key(config: dict) -> str:
    """A short, stable tag of a configuration (rows of another configuration are ignored)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]


def finished_rows(path: Path, key: str) -> dict[tuple[int, int], dict]:
    """The rows of ``path`` made under ``key``, by (index, seed); a torn last line is skipped."""
    done: dict[tuple[int, int], dict] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if row.get("config") == key:
                done[(row["index"], row["seed"])] = row
    return done
