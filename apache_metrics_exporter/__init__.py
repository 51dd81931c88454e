"""Apache httpd metrics exporter: mod_status and process figures for monitoring agents."""

__version__ = "0.2.0"
