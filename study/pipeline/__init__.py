"""What follows a study's trials: calibration, mode banks, MLflow logging and the report."""
