-- Drift of each model-adapter version watched for it: the reference
-- window (the first calls it served as the stable version, or a pinned
-- window) and the serving host's last judgement.

CREATE TABLE drift (
   version_id INTEGER PRIMARY KEY,
   reference TEXT,
   judged TEXT,
   at TEXT NOT NULL
);
