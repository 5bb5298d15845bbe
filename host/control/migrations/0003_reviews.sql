-- The human review queue.

CREATE TABLE reviews (
id INTEGER PRIMARY KEY,
created_at TEXT NOT NULL,
status TEXT NOT NULL,
trace_id TEXT NOT NULL,
connector TEXT,
proposed_by TEXT NOT NULL,
action TEXT NOT NULL,
event TEXT NOT NULL,
reasons TEXT NOT NULL,
decided_by TEXT,
decided_at TEXT,
comment TEXT,
result TEXT
);

CREATE INDEX reviews_status ON reviews(status, id);
