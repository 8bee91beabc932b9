"""The REST API (FastAPI): `core.api.app:app`, started by `modeldeck api`."""
