"""Server mode: MLflow's tracking server for a lake (``bedrot-lab server``), on PostgreSQL for a
team, with basic-auth accounts. Imported only when a server command runs or ``[server]`` is checked."""
