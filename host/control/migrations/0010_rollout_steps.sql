-- Progressive rollouts: the step the candidate version is in and since when.

ALTER TABLE deployments ADD COLUMN rollout_step INTEGER;
ALTER TABLE deployments ADD COLUMN step_since TEXT;
ALTER TABLE history ADD COLUMN rollout_step INTEGER;
