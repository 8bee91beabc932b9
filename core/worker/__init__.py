"""The worker process: its loop, the executor processes that run work, sidecar status."""
