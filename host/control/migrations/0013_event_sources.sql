-- Events from event sources (NATS JetStream): which were processed, so a
-- redelivered message never repeats an event's effects, and the messages a
-- source gave up on.
CREATE TABLE processed_events (
   source TEXT NOT NULL,
   event_id TEXT NOT NULL,
   at TEXT NOT NULL,
   PRIMARY KEY (source, event_id)
);

-- Marks past a source's dedupe window are deleted by age.
CREATE INDEX processed_events_at ON processed_events(source, at);

CREATE TABLE dead_letters (
   id INTEGER PRIMARY KEY AUTOINCREMENT,
   source TEXT NOT NULL,
   connector TEXT NOT NULL,
   subject TEXT NOT NULL,
   sequence INTEGER NOT NULL,
   delivered INTEGER NOT NULL,
   error TEXT NOT NULL,
   payload BLOB NOT NULL,
   payload_sha256 TEXT NOT NULL,
   at TEXT NOT NULL
);

CREATE INDEX dead_letters_source ON dead_letters(source, id);
