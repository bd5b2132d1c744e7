"""The study report (HTML and Markdown) and its sections."""
