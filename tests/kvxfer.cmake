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
# Prefill and decode groups of different TP degrees under mpirun (1->1, 2->1, 1->2, 4->2, and
# replicated KV heads 8->2, 2->8).
if(TARGET ts_node AND TARGET ts_tokenizer)
  add_executable(kvxfer_tp unit/kvxfer_tp.c)
  target_link_libraries(kvxfer_tp PRIVATE ts_node ts_tokenizer ts_common)
  target_compile_definitions(kvxfer_tp PRIVATE TS_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
  set_target_properties(kvxfer_tp PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR}/tests)
  ts_add_script_test(NAME kv_transfer_between_tp_layouts_matches_reference
                     SCRIPT integration/test_kvxfer_tp.py ARGS $<TARGET_FILE:kvxfer_tp>
                     1:1 2:1 1:2 4:2 8:2 2:8
                     LABELS integration TIMEOUT 600)
endif()
# The NCCL transport (node/kv_transfer_nccl.h) between two GPUs, label gpu: built whenever CUDA
# is, skipped (77, "SKIP: no CUDA device (...)" or "needs 2 CUDA devices") without two GPUs.
if(TESSERA_HAVE_CUDA AND TARGET ts_node AND TARGET ts_tokenizer)
  add_executable(kvxfer_nccl unit/kvxfer_nccl.c)
  target_link_libraries(kvxfer_nccl PRIVATE ts_node ts_tokenizer ts_common)
  target_compile_definitions(kvxfer_nccl PRIVATE TS_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
  set_target_properties(kvxfer_nccl PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR}/tests)
  ts_add_script_test(NAME kv_transfer_nccl_two_gpus_matches_reference
                     SCRIPT integration/test_kvxfer_nccl.py ARGS $<TARGET_FILE:kvxfer_nccl>
                     LABELS gpu TIMEOUT 600)
endif()
