"""The operators' commands: ``gateway`` (main), the admin socket client, the demo and the
test-vector printer. Entry points only; nothing below them imports this package."""
