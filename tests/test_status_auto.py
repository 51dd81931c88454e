"""The ?auto parser on captured and hand-made pages of every version."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from apache_metrics_exporter.catalogue import BY_NAME, SCOREBOARD_STATES, SERVER_METRICS, fits
from apache_metrics_exporter.collect import status
from apache_metrics_exporter.collect.status import count_scoreboard, parse_auto
from apache_metrics_exporter.errors import FetchError
from tests.conftest import data


def auto(name):
    return parse_auto(data(name).decode("latin-1"))


@pytest.mark.parametrize("mpm", ["prefork", "worker", "event"])
def test_real_2_4_71_pages_have_every_documented_key(mpm):
    page = auto(f"2.4.71-{mpm}-ext-on.auto.txt")
    always = {"parent_server_config_generation", "parent_server_mpm_generation",
              "server_uptime_seconds", "load1", "load5", "load15", "total_accesses",
              "total_kbytes", "total_duration_ms", "cpu_user_seconds", "cpu_system_seconds",
              "cpu_children_user_seconds", "cpu_children_system_seconds", "uptime",
              "busy_workers", "graceful_workers", "idle_workers"}
    assert always <= set(page.values)
    assert page.extended
    assert page.info["ServerName"] == "127.0.0.1"
    assert page.info["ServerMPM"] == mpm
    assert page.info["ServerVersion"].startswith("Apache/2.4.71")
    event_only = {"processes", "stopping_processes", "conns_total", "conns_async_wait_io",
                  "conns_async_writing", "conns_async_keep_alive", "conns_async_closing"}
    assert (event_only <= set(page.values)) == (mpm == "event")
    assert not (event_only & set(page.values)) or mpm == "event"
    assert isinstance(page.values["total_accesses"], int)
    assert isinstance(page.values["cpu_user_seconds"], float)
    assert set(page.scoreboard) <= {c for c, _ in SCOREBOARD_STATES}


def test_real_page_values_match_the_text():
    text = data("2.4.71-event-ext-on.auto.txt").decode()
    page = parse_auto(text)
    lines = dict(line.split(": ", 1) for line in text.splitlines() if ": " in line)
    assert page.values["total_accesses"] == int(lines["Total Accesses"])
    assert page.values["busy_workers"] == int(lines["BusyWorkers"])
    assert page.values["conns_total"] == int(lines["ConnsTotal"])
    assert page.scoreboard == lines["Scoreboard"]


def test_extended_status_off_has_no_totals():
    page = auto("2.4.71-prefork-ext-off.auto.txt")
    assert not page.extended
    assert "total_accesses" not in page.values
    assert page.values["busy_workers"] >= 1


def test_apache_2_2_page_bare_values_and_leading_dot_floats():
    page = auto("handmade-2.2-prefork.auto.txt")
    assert page.values == {
        "total_accesses": 49038, "total_kbytes": 169318, "cpu_load": 7.03642,
        "uptime": 85017, "requests_per_second": 0.576802, "bytes_per_second": 2039.38,
        "bytes_per_request": 3535.66, "busy_workers": 2, "idle_workers": 6,
    }
    assert "ServerName" not in page.info  # no server-name line before 2.4.13
    assert page.scoreboard == "_W___W___......."


def test_rhel_2_4_6_page():
    page = auto("handmade-2.4.6-prefork.auto.txt")
    assert page.values["cpu_load"] == pytest.approx(0.000203794)
    assert page.values["bytes_per_request"] == 2816.0
    assert isinstance(page.values["bytes_per_request"], float)


def test_duplicate_busy_idle_lines_first_pair_wins():
    # 2.4.35-2.4.57 event: the first pair counts the scoreboard, as 2.4.58+ does.
    page = auto("handmade-2.4.41-event.auto.txt")
    assert page.values["busy_workers"] == 3
    assert page.values["idle_workers"] == 72
    assert page.values["processes"] == 3
    assert "graceful_workers" not in page.values
    assert "conns_async_wait_io" not in page.values
    assert page.values["duration_per_request_ms"] == pytest.approx(4.66667)


def test_tls_cache_percent_and_proxy_k_suffixes():
    page = auto("handmade-2.4.63-event-tls-proxy.auto.txt")
    assert page.values["tls_cache_index_usage_percent"] == 1
    assert page.values["tls_cache_usage_percent"] == 2
    assert page.values["tls_cache_shared_memory_bytes"] == 512000
    assert page.values["conns_async_wait_io"] == 1
    assert page.values["graceful_workers"] == 1
    assert page.values["load1"] == -1.0
    assert page.info["CacheType"] == "SHMCB"
    assert page.info["TLSSessionCacheStatus"] == "yes"
    proxy = {(m.name, labels["worker"]): v for m, labels, v, _ in page.proxy}
    assert proxy[("proxy_worker_sent_kbytes", "http://10.0.0.1:8080")] == 5
    assert proxy[("proxy_worker_received_kbytes", "http://10.0.0.1:8080")] == 12
    assert proxy[("proxy_worker_busy", "http://10.0.0.2:8080")] == 1
    assert proxy[("proxy_worker_elected", "http://10.0.0.1:8080")] == 12
    assert {labels["balancer"] for _, labels, _, _ in page.proxy} == {"balancer://app"}
    # Telegraf keeps the members' plain numbers (not the K ones) under the raw key.
    assert page.telegraf_extra == {
        "ProxyBalancer[0]Worker[0]Elected": 12.0, "ProxyBalancer[0]Worker[0]Busy": 0.0,
        "ProxyBalancer[0]Worker[1]Elected": 0.0, "ProxyBalancer[0]Worker[1]Busy": 1.0}


def test_values_with_colons_and_garbage_numbers():
    page = parse_auto("host\nCurrentTime: Sunday, 29-Nov-2026 10:35:02 UTC\n"
                      "CPULoad: 0.e+79\nUptime: 0\nReqPerSec: nan\nBytesPerSec: inf\n"
                      "BusyWorkers: 1\nIdleWorkers: x\nScoreboard: W_\n")
    assert page.info["CurrentTime"] == "Sunday, 29-Nov-2026 10:35:02 UTC"
    assert page.values["cpu_load"] == 0.0
    assert "requests_per_second" not in page.values  # NaN is not a number to report
    assert "bytes_per_second" not in page.values
    assert "idle_workers" not in page.values


def test_crlf_line_endings():
    page = parse_auto("BusyWorkers: 4\r\nIdleWorkers: 2\r\nScoreboard: WWWW__..\r\n")
    assert page.values["busy_workers"] == 4
    assert page.scoreboard == "WWWW__.."


@pytest.mark.parametrize("body,what", [
    ("<html><body>Welcome to nginx!</body></html>", "not an Apache mod_status page"),
    ("", "not an Apache mod_status page"),
    ("Total Accesses: 10\nTotal kBytes: 3\nBusyWorkers: 1\n", "incomplete"),
])
def test_foreign_or_truncated_pages_are_refused(body, what):
    with pytest.raises(FetchError, match=what):
        parse_auto(body, source="http://x/server-status?auto")


def test_scoreboard_counts_all_eleven_states():
    counts = count_scoreboard("_SRWKDCLGI._W")
    assert counts == {"waiting": 2, "starting": 1, "reading": 1, "sending": 2,
                      "keepalive": 1, "dnslookup": 1, "closing": 1, "logging": 1,
                      "finishing": 1, "idle_cleanup": 1, "open": 1}
    assert len(counts) == 11


def test_every_auto_key_in_the_catalogue_is_parsed():
    text = "\n".join(f"{m.auto_key}: 7" for m in SERVER_METRICS) + "\nScoreboard: _\n"
    page = parse_auto(text)
    assert set(page.values) == {m.name for m in SERVER_METRICS}


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=400))
def test_mangled_input_only_ever_raises_fetch_error(text):
    try:
        page = parse_auto(text)
    except FetchError:
        return
    assert isinstance(page.scoreboard, str)
    assert all(fits(BY_NAME[name], value) for name, value in page.values.items())
    assert all(w.isprintable() for w in page.warnings)


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=len(data("2.4.71-event-ext-on.auto.txt"))))
def test_truncated_real_page_is_refused_or_parsed_consistently(cut):
    text = data("2.4.71-event-ext-on.auto.txt").decode()[:cut]
    try:
        parse_auto(text)
    except FetchError as exc:
        assert "Scoreboard" in str(exc)
        return
    assert "Scoreboard:" in text


def test_real_tls_cache_and_proxy_balancer_blocks():
    page = auto("2.4.71-event-tls-proxy.auto.txt")
    assert page.info["TLSSessionCacheStatus"] == "yes"
    assert page.info["CacheType"] == "SHMCB"
    assert page.values["tls_cache_shared_memory_bytes"] == 512000
    assert page.values["tls_cache_store_count"] >= 3  # three https requests were made
    assert isinstance(page.values["tls_cache_usage_percent"], int)
    members = {labels["worker"] for _, labels, _, _ in page.proxy}
    assert len(members) == 2
    elected = sum(v for m, _, v, _ in page.proxy if m.name == "proxy_worker_elected")
    assert elected == 3  # three requests went through the balancer


def test_one_warning_per_value_left_out_and_one_line_for_the_rest():
    text = "\n".join(f"{m.auto_key}: 9e999" for m in SERVER_METRICS) + "\nScoreboard: _\n"
    page = parse_auto(text, source="http://x/s?auto")
    assert page.values == {}
    assert len(page.warnings) == 11
    assert page.warnings[0] == ("http://x/s?auto: 'ParentServerConfigGeneration' is out of "
                                "the range the outputs can carry; left out")
    assert page.warnings[-1].endswith(f"{len(SERVER_METRICS) - 10} more values left out "
                                      "or duplicates ignored")


@pytest.mark.parametrize("value,parsed", [
    ("42", 42), ("0042", 42), (".5", 0), ("1e3", 1000), ("-1", -1), ("12K", 12),
    ("\u00b2", None), ("\u0663", None), ("1_0", None), ("nan", None), ("inf", None),
    ("1e400", None), ("9" * 25, None), ("", None), ("0x10", None), ("+7", 7),
])
def test_numbers_are_plain_ascii(value, parsed):
    page = parse_auto(f"BusyWorkers: {value}\nScoreboard: _\n")
    assert page.values.get("busy_workers") == parsed


def _fresh(text):
    """parse_auto with nothing remembered from earlier pages."""
    status._CLEAN_LINES.clear()
    return parse_auto(text)


AUTO_KEYS = sorted(m.auto_key for m in SERVER_METRICS if m.auto_key) + ["Scoreboard"]
AUTO_LINES = st.one_of(
    st.builds(lambda k, v: f"{k}: {v}", st.sampled_from(AUTO_KEYS),
              st.sampled_from(["0", "1", "42", ".5", "0.e+79", "-3", "1e400", "x", "",
                               "99999999999999999999999", "12K", "7%", "\u00b23", "nan"])),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30))


@settings(max_examples=300, deadline=None)
@given(st.lists(AUTO_LINES, max_size=12), st.lists(AUTO_LINES, max_size=12))
def test_lines_remembered_from_earlier_pages_change_no_answer(first, second):
    """A line read before (status._CLEAN_LINES) gives what reading it afresh
    gives, on whatever page and in whatever place it comes back: values,
    warnings and the values left out (a duplicate key: the first line wins,
    remembered or not)."""
    for lines in (first, second, first + second, second + first):
        page = "\n".join(lines + ["Scoreboard: __W."])
        try:
            expected = _fresh(page)
        except FetchError as exc:
            expected = exc
        for before in (first, second, lines):  # what may be remembered
            try:
                _fresh("\n".join(before + ["Scoreboard: _"]))
            except FetchError:
                pass
            try:
                got = parse_auto(page)
            except FetchError as exc:
                got = exc
            if isinstance(expected, FetchError):
                assert str(got) == str(expected)
            else:
                assert got == expected
                # in the same order, of the same types (1 == 1.0 for ==)
                assert [(k, v, type(v)) for k, v in got.values.items()] == \
                    [(k, v, type(v)) for k, v in expected.values.items()]


def test_the_memory_of_clean_lines_is_bounded():
    status._CLEAN_LINES.clear()
    for i in range(3 * status._CLEAN_MAX):
        parse_auto(f"Total Accesses: {i}\nScoreboard: _")
    parse_auto("Total Accesses: " + "1" * 200 + "\nScoreboard: _")  # too long to keep
    assert 0 < len(status._CLEAN_LINES) <= status._CLEAN_MAX
    assert all(len(line) <= status._CLEAN_LINE for line in status._CLEAN_LINES)
