-- The state of several evos nodes on PostgreSQL: the tables of the SQLite
-- migrations 1 to 12 in their final form, with what several writers need:
--   * component blobs in the database (every node reads what any node
--     uploaded);
--   * per-node rows for call statistics and shadow agreement (a node writes
--     only its own row; readers sum them), so no node overwrites another's
--     counts;
--   * the audit chain's head in a row of its own, locked by each appending
--     transaction, so the chain stays one sequence whatever node appends;
--   * a lease on an approved review, so one node carries it out.
-- Times are RFC 3339 text, as in the SQLite backend, so both order alike.

CREATE TABLE blobs (
   digest TEXT PRIMARY KEY,
   bytes BYTEA NOT NULL,
   created_at TEXT NOT NULL
);

CREATE TABLE versions (
   id BIGSERIAL PRIMARY KEY,
   plugin TEXT NOT NULL,
   version TEXT NOT NULL,
   digest TEXT NOT NULL,
   manifest TEXT NOT NULL,
   manifest_origin TEXT NOT NULL,
   manifest_base TEXT NOT NULL,
   created_at TEXT NOT NULL,
   -- A manifest may be longer than a btree entry holds: its hash is unique.
   manifest_sha256 TEXT NOT NULL,
   UNIQUE (plugin, digest, manifest_sha256)
);

CREATE TABLE deployments (
   plugin TEXT PRIMARY KEY,
   stable_id BIGINT NOT NULL REFERENCES versions(id),
   canary_id BIGINT REFERENCES versions(id),
   canary_weight INTEGER NOT NULL DEFAULT 0,
   shadow_id BIGINT REFERENCES versions(id),
   shadow_share INTEGER NOT NULL DEFAULT 0,
   rollout_step INTEGER,
   step_since TEXT,
   updated_at TEXT NOT NULL
);

CREATE TABLE history (
   id BIGSERIAL PRIMARY KEY,
   plugin TEXT NOT NULL,
   at TEXT NOT NULL,
   action TEXT NOT NULL,
   actor TEXT NOT NULL,
   version_id BIGINT REFERENCES versions(id),
   stable_id BIGINT REFERENCES versions(id),
   canary_id BIGINT REFERENCES versions(id),
   canary_weight INTEGER NOT NULL DEFAULT 0,
   shadow_id BIGINT REFERENCES versions(id),
   shadow_share INTEGER NOT NULL DEFAULT 0,
   rollout_step INTEGER,
   detail TEXT NOT NULL
);

CREATE INDEX history_plugin ON history(plugin, id);

CREATE TABLE control_generation (
   id INTEGER PRIMARY KEY CHECK (id = 1),
   generation BIGINT NOT NULL
);

INSERT INTO control_generation (id, generation) VALUES (1, 0);

CREATE TABLE version_stats (
   version_id BIGINT NOT NULL REFERENCES versions(id),
   node TEXT NOT NULL,
   outcomes TEXT NOT NULL,
   histogram BYTEA,
   updated_at TEXT NOT NULL,
   PRIMARY KEY (version_id, node)
);

CREATE TABLE agreement (
   live_id BIGINT NOT NULL REFERENCES versions(id),
   candidate_id BIGINT NOT NULL REFERENCES versions(id),
   node TEXT NOT NULL,
   counts TEXT NOT NULL,
   updated_at TEXT NOT NULL,
   PRIMARY KEY (live_id, candidate_id, node)
);

-- Each node's recent calls of a version (its rollout window), published
-- every second, so canaries are judged on the calls of all nodes.
CREATE TABLE windows (
   version_id BIGINT NOT NULL REFERENCES versions(id),
   node TEXT NOT NULL,
   counts TEXT NOT NULL,
   at TEXT NOT NULL,
   PRIMARY KEY (version_id, node)
);

CREATE TABLE audit (
   seq BIGINT PRIMARY KEY,
   at TEXT NOT NULL,
   actor TEXT NOT NULL,
   action TEXT NOT NULL,
   subject TEXT NOT NULL,
   digest TEXT,
   detail TEXT NOT NULL,
   prev_hash TEXT NOT NULL,
   hash TEXT NOT NULL
);

CREATE TABLE audit_head (
   id INTEGER PRIMARY KEY CHECK (id = 1),
   seq BIGINT NOT NULL,
   hash TEXT NOT NULL
);

INSERT INTO audit_head (id, seq, hash)
   VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');

CREATE TABLE reviews (
   id BIGSERIAL PRIMARY KEY,
   created_at TEXT NOT NULL,
   status TEXT NOT NULL,
   trace_id TEXT NOT NULL,
   connector TEXT,
   proposed_by TEXT NOT NULL,
   action TEXT NOT NULL,
   action_index INTEGER NOT NULL DEFAULT 0,
   event TEXT NOT NULL,
   reasons TEXT NOT NULL,
   decided_by TEXT,
   decided_at TEXT,
   comment TEXT,
   result TEXT,
   -- The node carrying out an approved review, and until when another
   -- node leaves it alone.
   lease_node TEXT,
   lease_until TEXT
);

CREATE INDEX reviews_status ON reviews(status, id);

CREATE TABLE tokens (
   id TEXT PRIMARY KEY,
   name TEXT NOT NULL,
   secret_sha256 TEXT NOT NULL,
   role TEXT NOT NULL,
   scope TEXT NOT NULL,
   created_at TEXT NOT NULL,
   revoked_at TEXT
);

CREATE TABLE kv (
   namespace TEXT NOT NULL,
   key TEXT NOT NULL,
   value BYTEA NOT NULL,
   PRIMARY KEY (namespace, key)
);

-- Locked (SELECT ... FOR UPDATE) with each write of its namespace, so
-- quotas hold under concurrent writers.
CREATE TABLE kv_usage (
   namespace TEXT PRIMARY KEY,
   keys BIGINT NOT NULL,
   bytes BIGINT NOT NULL
);

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
   id BIGSERIAL PRIMARY KEY,
   event_id TEXT NOT NULL,
   action_index INTEGER NOT NULL,
   label TEXT NOT NULL,
   source TEXT NOT NULL,
   actor TEXT NOT NULL,
   comment TEXT,
   at TEXT NOT NULL
);

CREATE INDEX labels_action ON labels(event_id, action_index, id);

CREATE TABLE recordings (
   id BIGSERIAL PRIMARY KEY,
   trace_id TEXT NOT NULL,
   event_id TEXT NOT NULL,
   event_kind TEXT NOT NULL,
   connector TEXT NOT NULL,
   reason TEXT NOT NULL,
   redactions TEXT NOT NULL,
   at TEXT NOT NULL
);

CREATE INDEX recordings_at ON recordings(at);
CREATE INDEX recordings_trace ON recordings(trace_id);

CREATE TABLE recorded_calls (
   id BIGSERIAL PRIMARY KEY,
   recording_id BIGINT NOT NULL REFERENCES recordings(id) ON DELETE CASCADE,
   step TEXT NOT NULL,
   action_index INTEGER,
   plugin TEXT NOT NULL,
   kind TEXT NOT NULL,
   version TEXT NOT NULL,
   digest TEXT NOT NULL,
   input TEXT NOT NULL,
   output TEXT NOT NULL,
   outcome TEXT NOT NULL,
   error TEXT,
   duration_us BIGINT NOT NULL,
   fuel BIGINT NOT NULL
);

CREATE INDEX recorded_calls_plugin ON recorded_calls(plugin, id);
CREATE INDEX recorded_calls_recording ON recorded_calls(recording_id);

CREATE TABLE drift (
   version_id BIGINT PRIMARY KEY,
   reference TEXT,
   judged TEXT,
   at TEXT NOT NULL
);

-- Events from event sources: which were processed (so a redelivered
-- message never repeats an event's effects), and the messages a source
-- gave up on.
CREATE TABLE processed_events (
   source TEXT NOT NULL,
   event_id TEXT NOT NULL,
   at TEXT NOT NULL,
   PRIMARY KEY (source, event_id)
);

-- Marks past a source's dedupe window are deleted by age.
CREATE INDEX processed_events_at ON processed_events(source, at);

CREATE TABLE dead_letters (
   id BIGSERIAL PRIMARY KEY,
   source TEXT NOT NULL,
   connector TEXT NOT NULL,
   subject TEXT NOT NULL,
   sequence BIGINT NOT NULL,
   delivered BIGINT NOT NULL,
   error TEXT NOT NULL,
   payload BYTEA NOT NULL,
   payload_sha256 TEXT NOT NULL,
   at TEXT NOT NULL
);

CREATE INDEX dead_letters_source ON dead_letters(source, id);
