-- Shadow versions: a deployment may mirror a share of its live calls to a
-- shadow version, and the agreement of each (live, candidate) pair of
-- versions is kept.

ALTER TABLE deployments ADD COLUMN shadow_id INTEGER REFERENCES versions(id);
ALTER TABLE deployments ADD COLUMN shadow_share INTEGER NOT NULL DEFAULT 0;
ALTER TABLE history ADD COLUMN shadow_id INTEGER REFERENCES versions(id);
ALTER TABLE history ADD COLUMN shadow_share INTEGER NOT NULL DEFAULT 0;

CREATE TABLE agreement (
   live_id INTEGER NOT NULL REFERENCES versions(id),
   candidate_id INTEGER NOT NULL REFERENCES versions(id),
   counts TEXT NOT NULL,
   updated_at TEXT NOT NULL,
   PRIMARY KEY (live_id, candidate_id)
);
