"""Errors the server reports to people: a bad configuration names the file, the key and the reason."""

from __future__ import annotations


class ConfigError(ValueError):
    def __init__(self, path: str, key: str, reason: str) -> None:
        self.path = path
        self.key = key
        self.reason = reason
        super().__init__(f"{path}: {key}: {reason}")
