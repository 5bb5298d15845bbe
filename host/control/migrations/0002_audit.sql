-- The audit log: a hash chain. Each entry's `hash` covers `prev_hash` and a
-- canonical encoding of its fields (see audit.rs).

CREATE TABLE audit (
   seq INTEGER PRIMARY KEY,
   at TEXT NOT NULL,
   actor TEXT NOT NULL,
   action TEXT NOT NULL,
   subject TEXT NOT NULL,
   digest TEXT,
   detail TEXT NOT NULL,
   prev_hash TEXT NOT NULL,
   hash TEXT NOT NULL
);
