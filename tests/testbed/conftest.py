# The test-bed fixtures come from the root conftest.py (pytest_plugins = ["p2p_fast.testbed.pytest_plugin"]).
