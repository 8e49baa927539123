# The test-bed fixtures come from the root conftest.py (pytest_plugins = ["testing.testbed.pytest_plugin"]).
