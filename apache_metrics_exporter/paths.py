"""Default locations of the files the commands keep between runs."""

STATE_DIR = "/var/lib/apache-metrics-exporter"
REAPER_STATE = STATE_DIR + "/reaper-state.json"
SPOOL_DIR = STATE_DIR + "/spool"
