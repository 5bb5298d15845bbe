-- API tokens (sha256 of the secret, never the secret).

CREATE TABLE tokens (
id TEXT PRIMARY KEY,
name TEXT NOT NULL,
secret_sha256 TEXT NOT NULL,
role TEXT NOT NULL,
scope TEXT NOT NULL,
created_at TEXT NOT NULL,
revoked_at TEXT
);
