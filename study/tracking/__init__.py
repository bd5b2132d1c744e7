"""MLflow tracking: the study's store and its runs."""
