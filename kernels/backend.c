/*
 * backend.c — ts_backend_create: the device string picks the backend (kernels/kernels.h), and
 * the CPU's instruction sets are detected here.
 *
 * Devices: "cpu" (or NULL) → the CPU backend with opts->isa (AUTO: the best this CPU runs);
 * "cuda" / "cuda:N" → the CUDA backend when the build has it (TESSERA_HAVE_CUDA), otherwise
 * TS_E_UNSUPPORTED.
 */
#include "kernels/kernels.h"

#include "common/error.h"
#include "kernels/cpu/cpu_backend.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>

/* XCR0: which register states the OS saves (so the registers may be used). */
static unsigned long long read_xcr0(void) {
    unsigned int eax, edx;
    __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
    return ((unsigned long long)edx << 32) | eax;
}

ts_cpu_isa ts_cpu_isa_detect(void) {
    unsigned int a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return TS_ISA_SCALAR;
    const int fma = (c >> 12) & 1, osxsave = (c >> 27) & 1, avx = (c >> 28) & 1,
              f16c = (c >> 29) & 1;
    if (!osxsave || !avx || !fma || !f16c) return TS_ISA_SCALAR;
    unsigned long long xcr0 = read_xcr0();
    if ((xcr0 & 0x6) != 0x6) return TS_ISA_SCALAR; /* XMM and YMM state */
    if (__get_cpuid_max(0, NULL) < 7) return TS_ISA_SCALAR;
    __cpuid_count(7, 0, a, b, c, d);
    const int avx2 = (b >> 5) & 1;
    if (!avx2) return TS_ISA_SCALAR;
    const int avx512f = (b >> 16) & 1, avx512dq = (b >> 17) & 1, avx512bw = (b >> 30) & 1,
              avx512vl = (b >> 31) & 1;
    const int zmm_state = (xcr0 & 0xe6) == 0xe6; /* opmask, ZMM_Hi256, Hi16_ZMM */
    if (avx512f && avx512dq && avx512bw && avx512vl && zmm_state) return TS_ISA_AVX512;
    return TS_ISA_AVX2;
}

int ts_cpu_has_avx512_vnni(void) {
    if (ts_cpu_isa_detect() != TS_ISA_AVX512) return 0; /* the OS saves ZMM state, F/BW/VL */
    unsigned int a, b, c, d;
    __cpuid_count(7, 0, a, b, c, d);
    return (c >> 11) & 1;
}
#else
ts_cpu_isa ts_cpu_isa_detect(void) {
    return TS_ISA_SCALAR;
}

int ts_cpu_has_avx512_vnni(void) {
    return 0;
}
#endif

const char *ts_cpu_isa_name(ts_cpu_isa isa) {
    switch (isa) {
    case TS_ISA_AUTO: return "auto";
    case TS_ISA_SCALAR: return "scalar";
    case TS_ISA_AVX2: return "avx2";
    case TS_ISA_AVX512: return "avx512";
    }
    return "unknown";
}

int ts_cpu_isa_parse(const char *text, ts_cpu_isa *out) {
    static const ts_cpu_isa all[] = {TS_ISA_AUTO, TS_ISA_SCALAR, TS_ISA_AVX2, TS_ISA_AVX512};
    for (size_t i = 0; text && i < sizeof all / sizeof all[0]; i++) {
        if (strcasecmp(text, ts_cpu_isa_name(all[i])) == 0) {
            *out = all[i];
            return 0;
        }
    }
    return ts_error_set(TS_E_INVALID,
                        "unknown CPU instruction set '%s' (expected auto, scalar, "
                        "avx2 or avx512)",
                        text ? text : "(null)");
}

static int create_cpu(const ts_backend_options *opts, ts_backend **out) {
    ts_cpu_isa isa = opts ? opts->isa : TS_ISA_AUTO;
    ts_cpu_isa best = ts_cpu_isa_detect();
    ts_cpu_impl impl;
    switch (isa) {
    case TS_ISA_AUTO: isa = best; break;
    case TS_ISA_SCALAR:
    case TS_ISA_AVX2:
    case TS_ISA_AVX512: break;
    default: return ts_error_set(TS_E_INVALID, "cpu backend: unknown instruction set %d", (int)isa);
    }
    if (isa > best)
        return ts_error_set(TS_E_UNSUPPORTED,
                            "cpu backend: this CPU does not support %s (best: %s)",
                            ts_cpu_isa_name(isa), ts_cpu_isa_name(best));
    impl = isa == TS_ISA_AVX512 ? TS_CPU_IMPL_AVX512
           : isa == TS_ISA_AVX2 ? TS_CPU_IMPL_AVX2
                                : TS_CPU_IMPL_SCALAR;
    /* An ISA the CPU has but whose kernels are not in this build falls back to the next best
     * only under AUTO; an explicit request is an error. */
    while (!ts_cpu_impl_supported(impl) && (!opts || opts->isa == TS_ISA_AUTO) &&
           impl != TS_CPU_IMPL_SCALAR)
        impl = impl == TS_CPU_IMPL_AVX512 ? TS_CPU_IMPL_AVX2 : TS_CPU_IMPL_SCALAR;
    return ts_cpu_backend_create(opts, impl, out);
}

int ts_backend_cuda_index(const char *dev, long *index) {
    if (strcmp(dev, "cuda") != 0 && strncmp(dev, "cuda:", 5) != 0) return 0;
    const char *num = dev[4] == ':' ? dev + 5 : "0";
    char *end = NULL;
    *index = strtol(num, &end, 10);
    if (!*num || *end || *index < 0 || *index > TS_MAX_CUDA_DEVICE)
        return ts_error_set(TS_E_INVALID, "device '%s': expected cuda or cuda:N", dev);
    return 1;
}

int ts_backend_device_offset(const char *device, int offset, char *out, size_t out_bytes) {
    long index = 0;
    int rc = ts_backend_cuda_index(device ? device : "cpu", &index);
    if (rc < 0) return rc;
    if (rc == 0)
        return ts_error_set(TS_E_INVALID,
                            "one GPU per rank needs --device cuda or cuda:N, not '%s'",
                            device ? device : "cpu");
    if (offset < 0 || index + offset > TS_MAX_CUDA_DEVICE)
        return ts_error_set(TS_E_INVALID, "device %s + %d: past cuda:%d", device, offset,
                            TS_MAX_CUDA_DEVICE);
    snprintf(out, out_bytes, "cuda:%ld", index + offset);
    return TS_OK;
}

int ts_backend_create(const ts_backend_options *opts, ts_backend **out) {
    *out = NULL;
    const char *dev = opts && opts->device ? opts->device : "cpu";
    if (strcmp(dev, "cpu") == 0) return create_cpu(opts, out);
    long index = 0;
    int cuda = ts_backend_cuda_index(dev, &index);
    if (cuda < 0) return cuda;
    if (cuda) {
#ifdef TESSERA_HAVE_CUDA
        /* The CUDA backend (kernels/cuda/) plugs in here. */
        extern int ts_cuda_backend_create(const ts_backend_options *opts, int device,
                                          ts_backend **out);
        return ts_cuda_backend_create(opts, (int)index, out);
#else
        return ts_error_set(TS_E_UNSUPPORTED, "device '%s': this build has no CUDA backend", dev);
#endif
    }
    return ts_error_set(TS_E_INVALID, "unknown device '%s' (expected cpu, cuda or cuda:N)", dev);
}

void ts_backend_destroy(ts_backend *be) {
    if (be) be->destroy(be);
}
