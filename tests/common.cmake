ts_add_test(NAME test_common SOURCES unit/test_common.c LABELS unit)
ts_add_test(NAME test_secret SOURCES unit/test_secret.c LABELS unit)
