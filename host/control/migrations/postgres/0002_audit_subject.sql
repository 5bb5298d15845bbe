-- An event's trace and the console's audit filters look entries up by
-- subject (`event/<id>`, a plugin name), newest first.
CREATE INDEX audit_subject ON audit(subject, seq);
