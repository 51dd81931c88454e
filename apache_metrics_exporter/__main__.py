"""``python -m apache_metrics_exporter`` runs the collector."""

from apache_metrics_exporter.cli import console_main

console_main()
