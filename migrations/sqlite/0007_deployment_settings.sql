-- The build settings a deployment was built with (the site's settings at the time with
-- the deploy's one-off overrides applied), and those overrides as given. NULL on
-- deployments made before settings were recorded: they used their site's settings.
ALTER TABLE deployments ADD COLUMN build_settings TEXT;
ALTER TABLE deployments ADD COLUMN overrides TEXT;
