"""The report's figures, written as PNG files on the Agg canvas (never pyplot)."""
