-- Reviews remember their action's index (idempotency keys).

ALTER TABLE reviews ADD COLUMN action_index INTEGER NOT NULL DEFAULT 0;
