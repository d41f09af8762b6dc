# CUDA backend tests (label gpu): built whenever the CUDA backend is (nvcc found), so they always
# compile and link; on a machine without a GPU each prints "SKIP: no CUDA device (...)" and exits
# 77, which ctest reports as skipped, not passed. scripts/gpu-check.sh runs them on a GPU.
if(TESSERA_HAVE_CUDA)
  ts_add_test(NAME test_kernels_cuda SOURCES unit/test_kernels_cuda.c LIBS ts_kernels
              LABELS gpu TIMEOUT 600)
  if(TARGET ts_node)
    ts_add_test(NAME test_comm_nccl SOURCES unit/test_comm_nccl.c LIBS ts_node LABELS gpu)
  endif()
  if(TARGET tessera)
    ts_add_script_test(NAME cuda_greedy_matches_reference
                       SCRIPT integration/test_generate_greedy.py
                       ARGS $<TARGET_FILE:tessera> --device cuda LABELS gpu TIMEOUT 600)
  endif()
endif()
