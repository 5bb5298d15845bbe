-- The control plane and kv: versions, deployments, their history, kv
-- entries and per-version call statistics.

CREATE TABLE versions (
   id INTEGER PRIMARY KEY,
   plugin TEXT NOT NULL,
   version TEXT NOT NULL,
   digest TEXT NOT NULL,
   manifest TEXT NOT NULL,
   manifest_origin TEXT NOT NULL,
   manifest_base TEXT NOT NULL,
   created_at TEXT NOT NULL,
   UNIQUE (plugin, digest, manifest)
);

CREATE TABLE deployments (
   plugin TEXT PRIMARY KEY,
   stable_id INTEGER NOT NULL REFERENCES versions(id),
   canary_id INTEGER REFERENCES versions(id),
   canary_weight INTEGER NOT NULL DEFAULT 0,
   updated_at TEXT NOT NULL
);

CREATE TABLE history (
   id INTEGER PRIMARY KEY,
   plugin TEXT NOT NULL,
   at TEXT NOT NULL,
   action TEXT NOT NULL,
   actor TEXT NOT NULL,
   version_id INTEGER REFERENCES versions(id),
   stable_id INTEGER REFERENCES versions(id),
   canary_id INTEGER REFERENCES versions(id),
   canary_weight INTEGER NOT NULL DEFAULT 0,
   detail TEXT NOT NULL
);

CREATE INDEX history_plugin ON history(plugin, id);

CREATE TABLE kv (
   namespace TEXT NOT NULL,
   key TEXT NOT NULL,
   value BLOB NOT NULL,
   PRIMARY KEY (namespace, key)
) WITHOUT ROWID;

CREATE TABLE version_stats (
   version_id INTEGER PRIMARY KEY REFERENCES versions(id),
   outcomes TEXT NOT NULL,
   histogram BLOB,
   updated_at TEXT NOT NULL
);
