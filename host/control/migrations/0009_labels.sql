-- Human feedback as labels: which versions produced each recorded action,
-- and what people said about it (a review decision, a later correction).

CREATE TABLE decisions (
   event_id TEXT NOT NULL,
   action_index INTEGER NOT NULL,
   trace_id TEXT NOT NULL,
   action_kind TEXT NOT NULL,
   proposed_by TEXT NOT NULL,
   steps TEXT NOT NULL,
   at TEXT NOT NULL,
   PRIMARY KEY (event_id, action_index)
);

CREATE TABLE labels (
   id INTEGER PRIMARY KEY,
   event_id TEXT NOT NULL,
   action_index INTEGER NOT NULL,
   label TEXT NOT NULL,
   source TEXT NOT NULL,
   actor TEXT NOT NULL,
   comment TEXT,
   at TEXT NOT NULL
);

CREATE INDEX labels_action ON labels(event_id, action_index, id);
