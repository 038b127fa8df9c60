"""Live streams in ``vidshard serve``: the runner on the shared pool, its store, checks,
event fan-out, webhooks and recorded windows (see docs/streams.md)."""

from .runner import StreamRunner

__all__ = ["StreamRunner"]
