# Kernel tests: every backend operation against the scalar reference, batch invariance, sampling,
# the thread pool. Each program prints which CPU implementations it ran.
ts_add_test(NAME test_kernels_ref SOURCES unit/test_kernels_ref.c LIBS ts_kernels LABELS unit)
ts_add_test(NAME test_kernels_simd SOURCES unit/test_kernels_simd.c LIBS ts_kernels LABELS unit
            TIMEOUT 300)
ts_add_test(NAME test_kernels_threadpool SOURCES unit/test_kernels_threadpool.c LIBS ts_kernels
            LABELS unit)
# simd.h's batched horizontal sums against the one-at-a-time tree, in each SIMD build: the
# checking code is compiled once per instruction set with the kernels' own flags; the program
# calls only what the CPU supports.
if(DEFINED TS_SIMD_avx2)
  ts_add_test(NAME test_simd_lanes SOURCES unit/test_simd_lanes.c LIBS ts_kernels LABELS unit)
  foreach(isa avx2 avx512 avx512emu)
    list(GET TS_SIMD_${isa} 0 define)
    list(SUBLIST TS_SIMD_${isa} 1 -1 flags)
    add_library(test_simd_lanes_${isa} OBJECT unit/simd_lanes_isa.c)
    target_include_directories(test_simd_lanes_${isa} PRIVATE ${PROJECT_SOURCE_DIR})
    target_compile_definitions(test_simd_lanes_${isa} PRIVATE ${define})
    target_compile_options(test_simd_lanes_${isa} PRIVATE ${flags} -ffp-contract=off)
    target_sources(test_simd_lanes PRIVATE $<TARGET_OBJECTS:test_simd_lanes_${isa}>)
  endforeach()
endif()
# The quantized types: dequantization against the gguf package, the dot products' definition,
# the fast dots against the reference.
ts_add_test(NAME test_quant SOURCES unit/test_quant.c LIBS ts_kernels LABELS unit)
