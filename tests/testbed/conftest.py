# The test-bed fixtures. (Once the root conftest.py has `pytest_plugins = ["p2p_fast.testbed.pytest_plugin"]`,
# this import becomes unnecessary, and harmless.)
from p2p_fast.testbed.pytest_plugin import (  # noqa: F401
    pytest_runtest_makereport,
    testbed,
    testbed_dns_ok,
)
