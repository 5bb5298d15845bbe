-- The control-plane generation, advanced by every deployment change, so a
-- host sees changes other processes commit.

CREATE TABLE control_generation (
   id INTEGER PRIMARY KEY CHECK (id = 1),
   generation INTEGER NOT NULL
);

INSERT INTO control_generation (id, generation) VALUES (1, 0);
