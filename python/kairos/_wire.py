"""What crosses to the engine as text and back: definitions in, reports out as JSON."""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any


def definition_text(definition: dict[str, Any] | str | os.PathLike[str]) -> str:
    """A definition as the engine reads it: a dict as JSON, or a file's text."""
    if isinstance(definition, dict):
        return json.dumps(definition)
    return pathlib.Path(definition).read_text()


def report(text: str) -> dict[str, Any]:
    """An engine's answer that is one JSON object (a status, a run, a decision)."""
    answer: dict[str, Any] = json.loads(text)
    return answer
