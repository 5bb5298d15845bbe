-- Sampled pipeline traffic, redacted before it is written: one row per
-- recorded event, one per call on its path (agent, model, policy, execute)
-- with the call's input and output, for replay against candidates.

CREATE TABLE recordings (
   id INTEGER PRIMARY KEY,
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
   id INTEGER PRIMARY KEY,
   recording_id INTEGER NOT NULL,
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
   duration_us INTEGER NOT NULL,
   fuel INTEGER NOT NULL
);

CREATE INDEX recorded_calls_plugin ON recorded_calls(plugin, id);
CREATE INDEX recorded_calls_recording ON recorded_calls(recording_id);
