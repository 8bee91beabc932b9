"""The stateless data plane: reading data files and SQL over them, PostgreSQL, model input,
profiles, artifacts, explainers, drift scores and metrics. Nothing here reads or writes the
metadata store's tables; callers pass in what a function needs."""
