"""The push to InfluxDB /api/v2/write and its spool."""
