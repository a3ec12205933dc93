"""State shared by every process using an app key: the access token's lifecycle and the request rate limit (SQLite or PostgreSQL)."""
