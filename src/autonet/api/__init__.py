"""The REST API (FastAPI, OpenAPI at /docs) and the controller daemon that serves it."""
