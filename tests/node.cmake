if(TARGET ts_node)
  ts_add_test(NAME test_kv_pool SOURCES unit/test_kv_pool.c LIBS ts_node LABELS unit)
  ts_add_test(NAME test_shard SOURCES unit/test_shard.c LIBS ts_node LABELS unit)
endif()
