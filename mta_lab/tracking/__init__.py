"""MLflow conventions: explicit URIs, experiments marked as model training, runs with the project's tags, a Lightning
logger that never duplicates steps."""
