"""Printing a report: a tree (text) for people, JSON or YAML for programs."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import yaml

FORMATS = ("text", "json", "yaml")


@dataclass
class Node:
    label: str
    children: list[Node] = field(default_factory=list)

    def add(self, label: str) -> Node:
        child = Node(label)
        self.children.append(child)
        return child

    def lines(self) -> list[str]:
        out = [self.label]
        for i, child in enumerate(self.children):
            last = i == len(self.children) - 1
            sub = child.lines()
            out.append(("└─ " if last else "├─ ") + sub[0])
            out.extend(("   " if last else "│  ") + line for line in sub[1:])
        return out


def render(report: Any, text: Node | str, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(report, indent=2, sort_keys=False)
    if fmt == "yaml":
        return yaml.safe_dump(report, sort_keys=False, allow_unicode=True).rstrip("\n")
    return "\n".join(text.lines()) if isinstance(text, Node) else text
