"""``python -m apache_metrics_exporter`` runs the collector."""

from apache_metrics_exporter.entry import console_main

console_main()
