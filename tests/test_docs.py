"""Generated documentation matches its sources (make docs)."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_metric_reference_and_man_pages_are_current():
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_docs.py"), "--check"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_every_metric_is_in_the_reference():
    from apache_metrics_exporter.catalogue import ALL_METRICS

    text = (ROOT / "docs" / "metrics.md").read_text()
    for m in ALL_METRICS:
        assert f"| `{m.name}` |" in text, m.name


# --- the hand-written pages: README.md, CONTRIBUTING.md, docs/*.md ------------------------

README = ROOT / "README.md"
PAGES = [README, ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]


def _prose(text: str) -> str:
    """The text without its fenced code blocks (a '# comment' there is no heading)."""
    return re.sub(r"^```.*?^```[ \t]*$", "", text, flags=re.M | re.S)


def anchors(text: str) -> set:
    """The fragment ids GitHub gives the headings of a Markdown text."""
    seen: dict = {}
    out = set()
    for heading in re.findall(r"^#{1,6}\s+(.*?)\s*#*\s*$", _prose(text), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def links(text: str) -> list:
    """The targets of the inline links of a Markdown text (code blocks left out)."""
    return re.findall(r"\]\(([^)\s]+)\)", _prose(text))


def test_readme_is_short():
    # Issue 15: a README for users, about 300 lines; the rest lives in docs/.
    assert len(README.read_text().splitlines()) <= 330


def test_readme_starts_with_the_two_commands():
    text = README.read_text()
    first_screen = text.split("\n## ", 1)[0]
    blocks = re.findall(r"^```(\w*)\n(.*?)^```", first_screen, re.M | re.S)
    assert len(blocks) == 1, "one code block before the first section"
    commands = [ln.split("#", 1)[0].strip() for ln in blocks[0][1].splitlines()]
    assert commands == ["make demo", "make test"]
    assert "as root" in first_screen


def test_every_relative_link_points_to_a_file_and_heading_that_exist():
    broken = []
    for page in PAGES:
        for target in links(page.read_text()):
            if re.match(r"^[a-z]+:", target):  # https:, mailto: ...
                continue
            path, _, fragment = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            if not dest.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
            elif fragment and dest.suffix == ".md" and fragment not in anchors(dest.read_text()):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, "\n".join(broken)


def test_every_docs_page_is_linked_from_the_readme():
    linked = {(ROOT / t.split("#", 1)[0]).resolve() for t in links(README.read_text())}
    for page in (ROOT / "docs").glob("*.md"):
        assert page.resolve() in linked, page.name
    for man in (ROOT / "docs" / "man").glob("*.1"):
        assert man.resolve() in linked, man.name


def test_every_option_the_docs_name_exists():
    """An option named in the README or docs/ is one of the commands', so a
    renamed or removed option cannot linger in prose."""
    from apache_metrics_exporter import config

    known = {option for parser in (config.build_parser(), config.build_reaper_parser())
             for action in parser._actions for option in action.option_strings}
    # Options of other programs the pages mention, and apache-manager's own.
    others = {"--no-install-recommends", "--no-upgrade", "--collector.textfile.directory",
              "--config", "--config-directory", "--input-filter", "--test",
              "--kill-workers", "--collect-metrics",
              "--now", "--runs", "--quick", "--only"}  # systemctl --now; benchmarks/run.py
    unknown = set()
    for page in PAGES:
        if page.name in ("migration.md", "CONTRIBUTING.md"):
            continue  # apache-manager's options; pytest's and make's
        for option in re.findall(r"(?<![\w-])(--[a-z][\w.-]*[a-z0-9_])", page.read_text()):
            if option not in known and option not in others:
                unknown.add(f"{page.name}: {option}")
    assert not unknown, sorted(unknown)


def test_metric_names_in_the_pages_are_in_the_reference():
    """apache_* names (Prometheus families, Influx measurements, collectd types)
    anywhere in the README and docs/, and the tab file's keys in docs/tab.md,
    are names docs/metrics.md (generated from the catalogue) has: prose cannot
    keep a name the catalogue dropped or renamed."""
    words = re.findall(r"[\w.-]+", (ROOT / "docs" / "metrics.md").read_text())
    # Influx names are measurement.field: both halves count.
    reference = set(words) | {part for w in words for part in w.split(".")}
    unknown = []
    for page in PAGES:
        if page.name in ("metrics.md", "migration.md", "CONTRIBUTING.md"):
            continue  # migration.md: apache-manager's names, checked by test_manager.py
        text = page.read_text()
        for name in re.findall(r"(?<![\w.-])(apache_[a-z0-9_]*[a-z0-9])(?![\w{])", text):
            if name not in reference:
                unknown.append(f"{page.name}: {name}")
    # status-response: the tab file's spelling of `up`, 0 for success (apache-manager's).
    for key in re.findall(r"`([a-z0-9]+(?:-[a-z0-9]+)+)`", (ROOT / "docs" / "tab.md").read_text()):
        if key not in reference and key != "status-response":
            unknown.append(f"tab.md: {key}")
    assert not unknown, unknown


def test_man_pages_say_where_the_debian_package_puts_the_docs():
    # The man pages send readers to docs/metrics.md and docs/migration.md; a
    # .deb user has no checkout, so the pages name where packaging/debian/rules
    # copies docs/ (a newcomer found "in the project's source" only).
    rules = (ROOT / "packaging" / "debian" / "rules").read_text()
    assert "cp -r docs $(DEST)/usr/share/doc/$(PKG)/docs" in rules
    for page in ("apache-metrics-exporter.1", "apache-worker-reaper.1", "apache-manager.1"):
        see_also = (ROOT / "docs" / "man" / page).read_text().split(".SH SEE ALSO", 1)[1]
        assert "/usr/share/doc/apache-metrics-exporter/docs/" in see_also, page


@pytest.mark.parametrize("page", ["apache-metrics-exporter.1", "apache-worker-reaper.1",
                                  "apache-manager.1"])
def test_man_pages_fit_80_columns_and_have_the_usual_sections(page):
    if not shutil.which("man"):
        pytest.skip("man is not installed (Debian package man-db)")
    path = ROOT / "docs" / "man" / page
    shown = subprocess.run(["man", "-l", str(path)], capture_output=True, text=True,
                           env={**os.environ, "MANWIDTH": "80", "MAN_KEEP_FORMATTING": "",
                                "PAGER": "cat"}, timeout=60).stdout
    wide = [line for line in shown.splitlines() if len(line) > 80]
    assert not wide, wide[:3]
    headings = [line for line in shown.splitlines() if line and not line[0].isspace()]
    assert "FILES" in headings and "SEE ALSO" in headings, headings
    if page != "apache-manager.1":  # its exit status is in its --help text
        assert "EXIT STATUS" in headings, headings
        assert "/var/lib/apache-metrics-exporter/reaper-state.json" in shown
    if page == "apache-metrics-exporter.1":  # (the reaper uses no collector state)
        assert "/var/lib/apache-metrics-exporter/collector-state.json" in shown


def test_the_endpoint_keep_alive_the_docs_give_is_the_endpoints():
    # Newcomer run: docs/prometheus.md's security model said an idle
    # connection is kept up to 330 s, its side-by-side table that a scraper
    # slower than every 10 s connects anew each time; a connection idle for
    # 15 s was answered.
    from apache_metrics_exporter.endpoint import IDLE_DEADLINE

    text = (ROOT / "docs" / "prometheus.md").read_text()
    idle = re.findall(r"idle up to (\d+) s", text)
    assert len(idle) >= 2 and set(idle) == {f"{IDLE_DEADLINE:g}"}, idle
    assert "connects (and with TLS, shakes hands) anew each time" not in text


def test_the_exit_statuses_of_help_and_man_page_include_checks_and_the_pushs_1():
    # Newcomer run: --check exits 1 when a check FAILs, and the push when
    # InfluxDB refuses the token; --help and the man page listed 1 as "output
    # could not be written" alone.
    from apache_metrics_exporter.config import EPILOG
    from tests.conftest import run_exporter
    from tests.harness.apache import free_port

    for text in (EPILOG, (ROOT / "docs/man/apache-metrics-exporter.1").read_text()
                 .replace("\\-", "-")):
        assert "1 output could not be written (--format influxdb: also credentials or data " \
            "refused; --check: a check FAILed)" in " ".join(text.split()), text
    proc = run_exporter("--check", "--url", f"http://127.0.0.1:{free_port()}/server-status")
    assert proc.returncode == 1 and "\nFAIL status page:" in "\n" + proc.stdout


def test_each_man_page_lists_only_the_files_its_command_uses():
    # Newcomer run: the reaper's FILES named the collector state and the
    # spool, which only apache-metrics-exporter reads and writes.
    pages = {name: (ROOT / "docs/man" / f"{name}.1").read_text().replace("\\-", "-")
             for name in ("apache-metrics-exporter", "apache-worker-reaper")}
    files = {name: text.split(".SH FILES", 1)[1].split(".SH ", 1)[0]
             for name, text in pages.items()}
    for name in pages:
        assert "reaper-state.json" in files[name]
    assert "collector-state.json" in files["apache-metrics-exporter"]
    assert "/spool/" in files["apache-metrics-exporter"]
    assert "collector-state" not in files["apache-worker-reaper"]
    assert "spool" not in files["apache-worker-reaper"]
