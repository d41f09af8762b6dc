ts_add_test(NAME test_common SOURCES unit/test_common.c LABELS unit)
