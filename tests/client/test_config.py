"""ClientConfig from the EPICS_CA_* environment, as libca reads it."""

from __future__ import annotations

from caioc.client import ClientConfig


def test_timings_from_the_environment() -> None:
    config = ClientConfig.from_environment({"EPICS_CA_AUTO_ADDR_LIST": "NO"})
    assert config.connection_timeout == 30.0 and config.echo_timeout == 5.0
    assert config.max_search_interval == 1.0
    config = ClientConfig.from_environment(
        {
            "EPICS_CA_AUTO_ADDR_LIST": "NO",
            "EPICS_CA_CONN_TMO": "2.5",
            "EPICS_CA_MAX_SEARCH_PERIOD": "120",
        }
    )
    assert config.connection_timeout == 2.5
    assert config.max_search_interval == 120.0
    # libca's floor for the search period
    low = {"EPICS_CA_AUTO_ADDR_LIST": "NO", "EPICS_CA_MAX_SEARCH_PERIOD": "5"}
    assert ClientConfig.from_environment(low).max_search_interval == 60.0


def test_addresses_from_the_environment() -> None:
    config = ClientConfig.from_environment(
        {
            "EPICS_CA_AUTO_ADDR_LIST": "NO",
            "EPICS_CA_ADDR_LIST": "10.1.2.3 10.1.2.4:6000",
            "EPICS_CA_SERVER_PORT": "7064",
            "EPICS_CA_REPEATER_PORT": "7065",
        }
    )
    assert config.search_addresses == [("10.1.2.3", 7064), ("10.1.2.4", 6000)]
    assert config.server_port == 7064 and config.repeater_port == 7065
