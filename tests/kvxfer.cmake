# KV transfer between prefill and decode groups (node/kv_layout.h, node/kv_transfer.h).
if(TARGET ts_node)
  ts_add_test(NAME test_kv_layout SOURCES unit/test_kv_layout.c LIBS ts_node LABELS unit)
endif()
if(TARGET ts_node AND TARGET ts_tokenizer)
  ts_add_test(NAME test_kv_transfer SOURCES unit/test_kv_transfer.c LIBS ts_node ts_tokenizer
              LABELS unit TIMEOUT 300)
endif()
if(TARGET ts_node AND TARGET ts_tokenizer)
  ts_add_test(NAME test_kv_transfer_fault SOURCES unit/test_kv_transfer_fault.c
              LIBS ts_node ts_tokenizer LABELS fault TIMEOUT 300)
endif()
