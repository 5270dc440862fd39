"""docs/receiver.md documents every key of the receiver's config file."""

from __future__ import annotations

import re
import typing
from pathlib import Path

from pydantic import BaseModel

from gemini_webhook_receiver import reasons
from gemini_webhook_receiver.reasons import Rejection
from gemini_webhooks.contracts import receiver_config as rc

DOC = Path(__file__).resolve().parents[2] / "docs" / "receiver.md"
# Documented as a whole in their own rows (a target, a route, a match).
COMPOUND = {"targets", "target"}


def _keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Dotted keys; a list of objects (`routes[]`) and a target are documented whole."""
    keys = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        item = typing.get_args(annotation)[0] if typing.get_origin(annotation) is list else None
        if isinstance(item, type) and issubclass(item, BaseModel):
            keys.append(f"{prefix}{name}[]" if name not in COMPOUND else prefix + name)
            continue
        nested = [
            a
            for a in (typing.get_args(annotation) or (annotation,))
            if isinstance(a, type) and issubclass(a, BaseModel)
        ]
        if nested and name not in COMPOUND:
            keys += _keys(nested[0], f"{prefix}{name}.")
        else:
            keys.append(prefix + name)
    return keys


def test_every_config_key_is_in_the_configuration_table() -> None:
    table = DOC.read_text().split("## Configuration", 1)[1].split("### Signing secrets", 1)[0]
    missing = []
    for key in _keys(rc.ReceiverConfig):
        section, _, leaf = key.rpartition(".")
        if f"`{key}`" not in table and not (section and f"`.{leaf}`" in table):
            missing.append(key)
    assert missing == []


def test_every_rejection_reason_is_in_the_bad_input_table_with_its_status() -> None:
    """reasons.py is the closed set; the table is where operators look a reason up."""
    table = DOC.read_text().split("**Bad input**", 1)[1].split("**Pings.**", 1)[0]
    documented: dict[str, set[int]] = {}
    for row in table.splitlines():
        cells = [cell.strip() for cell in row.strip().strip("|").split("|")]
        if not row.startswith("|") or len(cells) != 4 or not cells[1].isdigit():
            continue
        for names, status in ((cells[0], cells[1]), (cells[2], cells[3])):
            for name in re.findall(r"`([a-z_]+)`", re.sub(r"\(.*?\)", "", names)):
                documented.setdefault(name, set()).add(int(status))
    closed_set = {r.reason: {r.status} for r in vars(reasons).values() if isinstance(r, Rejection)}
    assert documented == closed_set
