"""Live streams: many cameras over every device, batched, reconnected, moved when a
device dies. See docs/streams.md."""
