-- Web console sessions, shared by every node on this state: the SHA-256 of
-- the session id (the cookie holds the id), the token it stands for, the
-- CSRF secret of its forms, and when it was opened and ends (Unix seconds).
CREATE TABLE console_sessions (
   id_sha256 TEXT PRIMARY KEY,
   token_id TEXT NOT NULL,
   csrf TEXT NOT NULL,
   created INTEGER NOT NULL,
   expires INTEGER NOT NULL
);

CREATE INDEX console_sessions_token ON console_sessions(token_id, created);
CREATE INDEX console_sessions_expires ON console_sessions(expires);
