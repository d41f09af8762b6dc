if(TARGET ts_node)
  ts_add_test(NAME test_kv_pool SOURCES unit/test_kv_pool.c LIBS ts_node LABELS unit)
  ts_add_test(NAME test_kv_tier_host SOURCES unit/test_kv_tier_host.c LIBS ts_node LABELS unit)
  ts_add_test(NAME test_kv_tier_disk SOURCES unit/test_kv_tier_disk.c LIBS ts_node LABELS unit)
  ts_add_test(NAME test_shard SOURCES unit/test_shard.c LIBS ts_node LABELS unit)
  ts_add_test(NAME test_step_cost SOURCES unit/test_step_cost.c LIBS ts_node LABELS unit)
endif()
if(TARGET ts_node)
  # The prefix cache through the engine and scheduler on the bundled model (a few seconds).
  ts_add_test(NAME prefix_cache_reuses_only_bitwise_equal_kv SOURCES unit/test_prefix_cache.c
              LIBS ts_node LABELS integration)
endif()
if(TARGET ts_node)
  # Interactive requests preempt batch filler within a step; results unchanged (bundled model).
  ts_add_test(NAME scheduler_interactive_preempts_batch SOURCES unit/test_sched_priority.c
              LIBS ts_node LABELS integration)
  # Smooth decode: a long prompt beside decoding streams is spread over steps (bundled model).
  ts_add_test(NAME scheduler_decode_slack_spreads_prompts SOURCES unit/test_sched_decode_slack.c
              LIBS ts_node LABELS integration)
endif()
