"""Report sections that compute more than a table: each returns the context its template part shows."""
