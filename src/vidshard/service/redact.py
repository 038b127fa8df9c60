"""Server paths kept from clients that are not admins.

A non-admin key is shown the paths it gave (relative to an input root or a model dir)
and the names of files, never where the server keeps them: not the data dir, the output
root, the uploads, nor the absolute form of an input root. Admins see everything.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .auth import Principal
from .settings import ServiceSettings

# A path component runs until whitespace, a quote or punctuation that ends a path in a
# message ("/x/in.mp4: not a video", "'/x/in.mp4'", "(/x/in.mp4)", "slow.py:Slow").
_PATH_TAIL = r"(?:/[^\s'\"`,;:()\[\]{}<>|]*)?"
_BEFORE = r"(?<![\w.~/-])"
_AFTER = r"(?![\w~-]|\.\w)"  # "/srv/data." ends a sentence; "/srv/data.bak" is another


@dataclass(frozen=True)
class _Root:
    prefix: str  # no trailing slash ("" for "/")
    relative: bool  # shown relative to the root (the client named it so), else by name
    label: str  # what the root itself is shown as


class PathRedactor:
    """Replaces server paths in text: one inside an input root or model dir by its path
    relative to that root, one inside the server's own folders by its file name."""

    def __init__(self, roots: Sequence[_Root]) -> None:
        self._roots = {root.prefix: root for root in roots}
        ordered = sorted(self._roots, key=len, reverse=True)  # the deepest root wins
        alternatives = "|".join(re.escape(prefix) for prefix in ordered)
        self._pattern = (
            re.compile(f"{_BEFORE}(?P<root>{alternatives})(?P<tail>{_PATH_TAIL}){_AFTER}")
            if ordered
            else None
        )

    @classmethod
    def from_settings(cls, settings: ServiceSettings) -> PathRedactor:
        roots: list[_Root] = []

        def add(path: Path, relative: bool, label: str) -> None:
            for form in {str(path), os.path.realpath(path)}:
                roots.append(_Root(form.rstrip("/"), relative, label))

        for folder, label in (
            (settings.data_dir, "<data dir>"),
            (settings.outputs_dir, "<output root>"),
            (settings.uploads_dir, "<uploads>"),
            # where an internal error's file would be (site-packages)
            (Path(sys.prefix), "<python>"),
            (Path(sys.base_prefix), "<python>"),
        ):
            add(folder, False, label)
        for root in settings.input_roots:
            add(root, True, "<input root>")
        for root in settings.model_dirs:
            add(root, True, "<model dir>")
        return cls(roots)

    def text(self, message: str) -> str:
        """``message`` with every server path in it replaced."""
        if self._pattern is None:
            return message
        return self._pattern.sub(self._replace, message)

    def path(self, path: str) -> str:
        """One server path: relative to its root, or else its file name."""
        shown = self.text(path)
        if shown.startswith("/"):  # outside every root (the roots changed since)
            return os.path.basename(shown.rstrip("/")) or shown
        return shown

    def _replace(self, match: re.Match[str]) -> str:
        root = self._roots[match["root"]]
        tail = match["tail"].strip("/")
        if not tail:  # the root itself ("/" alone is no path in a message)
            return root.label if root.prefix else match[0]
        return tail if root.relative else tail.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class Viewer:
    """What one request's principal is shown: everything for an admin; for any other
    key, server paths replaced (:class:`PathRedactor`)."""

    principal: Principal
    redactor: PathRedactor

    @property
    def sees_paths(self) -> bool:
        return self.principal.admin

    def text(self, message: str | None) -> str | None:
        """A message (a job's error, an error answer) as this viewer may read it."""
        if message is None or self.sees_paths:
            return message
        return self.redactor.text(message)

    def input(self, path: str, kind: str) -> str:
        """A job's input: a path relative to its input root, an upload's file name, a URL."""
        if kind == "upload":
            return os.path.basename(path)
        if kind != "path" or self.sees_paths:
            return path
        return self.redactor.path(path)

    def params(self, params: dict[str, Any]) -> dict[str, Any]:
        """A job's options: a server's default model file is a server path too."""
        if self.sees_paths:
            return params
        return {k: self.redactor.text(v) if isinstance(v, str) else v for k, v in params.items()}

    def file(self, path: str) -> str:
        """An output file: its full path for an admin, else its name."""
        return path if self.sees_paths else os.path.basename(path)
