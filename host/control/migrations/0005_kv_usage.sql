-- kv usage per namespace, kept with every write, so quotas are checked
-- without counting the namespace.

CREATE TABLE kv_usage (
   namespace TEXT PRIMARY KEY,
   keys INTEGER NOT NULL,
   bytes INTEGER NOT NULL
) WITHOUT ROWID;

INSERT INTO kv_usage (namespace, keys, bytes)
   SELECT namespace, COUNT(*), SUM(LENGTH(CAST(key AS BLOB)) + LENGTH(value)) FROM kv GROUP BY namespace;
