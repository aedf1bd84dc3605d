"""MLflow conventions: explicit URIs, runs with the project's tags, a Lightning logger that never duplicates steps."""
