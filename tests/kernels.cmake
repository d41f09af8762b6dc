# Kernel tests: every backend operation against the scalar reference, batch invariance, sampling,
# the thread pool. Each program prints which CPU implementations it ran.
ts_add_test(NAME test_kernels_ref SOURCES unit/test_kernels_ref.c LIBS ts_kernels LABELS unit)
ts_add_test(NAME test_kernels_simd SOURCES unit/test_kernels_simd.c LIBS ts_kernels LABELS unit
            TIMEOUT 300)
ts_add_test(NAME test_kernels_threadpool SOURCES unit/test_kernels_threadpool.c LIBS ts_kernels
            LABELS unit)
