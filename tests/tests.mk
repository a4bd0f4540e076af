# tests/ — Check unit suites (tests/check_<module>.c) and integration scripts.
CHECK_SUITES +=
INTEGRATION_TESTS +=
CHECK_SUITES +=
