# KV transfer between prefill and decode groups (kvx/kv_layout.h, kvx/kv_transfer.h).
if(TARGET ts_kvx)
  ts_add_test(NAME test_kv_layout SOURCES unit/test_kv_layout.c LIBS ts_kvx LABELS unit)
endif()
if(TARGET ts_kvx AND TARGET ts_tokenizer)
  ts_add_test(NAME test_kv_transfer SOURCES unit/test_kv_transfer.c LIBS ts_kvx ts_tokenizer
              LABELS unit TIMEOUT 300)
endif()
if(TARGET ts_kvx AND TARGET ts_tokenizer)
  ts_add_test(NAME test_kv_transfer_fault SOURCES unit/test_kv_transfer_fault.c
              LIBS ts_kvx ts_tokenizer LABELS fault TIMEOUT 300)
endif()
# Prefill and decode groups of different TP degrees under mpirun (1->1, 2->1, 1->2, 4->2, and
# replicated KV heads 8->2, 2->8).
if(TARGET ts_kvx AND TARGET ts_tokenizer)
  add_executable(kvxfer_tp unit/kvxfer_tp.c)
  target_link_libraries(kvxfer_tp PRIVATE ts_kvx ts_tokenizer ts_common)
  target_compile_definitions(kvxfer_tp PRIVATE TS_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
  set_target_properties(kvxfer_tp PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR}/tests)
  ts_add_script_test(NAME kv_transfer_between_tp_layouts_matches_reference
                     SCRIPT integration/test_kvxfer_tp.py ARGS $<TARGET_FILE:kvxfer_tp>
                     1:1 2:1 1:2 4:2 8:2 2:8
                     LABELS integration TIMEOUT 600)
endif()
# The transport choice, what a machine without a GPU can check of it (header field, the NCCL
# checksum's host reference, the refusals of NCCL on CPU engines).
if(TARGET ts_kvx AND TARGET ts_tokenizer)
  ts_add_test(NAME test_kv_transfer_transport SOURCES unit/test_kv_transfer_transport.c
              LIBS ts_kvx ts_tokenizer LABELS unit TIMEOUT 300)
endif()
# --device, --device-per-rank and --kv-transport on tessera-node and tessera up: bad values, GPUs
# that are not there and nccl without a GPU refused.
if(TARGET tessera AND TARGET tessera-node)
  ts_add_script_test(NAME device_flag_refusals
                     SCRIPT integration/test_device_flags.py
                     ARGS $<TARGET_FILE:tessera> $<TARGET_FILE:tessera-node>
                     LABELS integration TIMEOUT 120)
endif()
# The NCCL transport (kv_transfer.h "Transports", kvx/kv_transfer_nccl.h), label gpu, built
# whenever CUDA is: the device checksum against its host reference (one GPU), and whole
# transfers through the sender/receiver interface between two GPUs in one process (skipped,
# 77, "SKIP: needs 2 CUDA devices ...", with fewer: NCCL puts no two ranks of one communicator
# on one GPU).
if(TESSERA_HAVE_CUDA AND TARGET ts_kvx AND TARGET ts_tokenizer)
  ts_add_test(NAME test_kv_checksum_cuda SOURCES unit/test_kv_checksum_cuda.c LIBS ts_kvx
              LABELS gpu TIMEOUT 300)
  ts_add_test(NAME test_kv_transfer_nccl SOURCES unit/kvxfer_nccl.c LIBS ts_kvx ts_tokenizer
              LABELS gpu TIMEOUT 600)
endif()
