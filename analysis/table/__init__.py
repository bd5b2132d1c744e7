"""The results table: loading a study into it, its columns, protocols and the study's modes."""
