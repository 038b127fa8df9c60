"""One router per resource: jobs and uploads, devices and health, the seeds' old
endpoints, and the dashboard page."""
