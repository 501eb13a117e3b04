"""What more than one test module uses that is not a fixture (fixtures live in conftest.py): the browser, the
servers, and the data, archives and reports the tests make or check.

Tests import these as ``helpers.<module>`` (pytest puts tests/ on the path); scripts outside tests/ put the
repository root on the path and import ``tests.helpers.<module>``. conftest.py has pytest rewrite their asserts,
so a failing check here reports its values as a test's own assert would."""
