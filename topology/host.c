/* host.c — see host.h. */
#include "topology/host.h"

#include "common/error.h"

#include <hwloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef TESSERA_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

static int alloc_cores(ts_host *h, int cores, int pus) {
    h->core_numa = calloc((size_t)cores, sizeof *h->core_numa);
    h->core_pu_begin = calloc((size_t)cores + 1, sizeof *h->core_pu_begin);
    h->pus = calloc((size_t)pus, sizeof *h->pus);
    if (!h->core_numa || !h->core_pu_begin || !h->pus)
        return ts_error_set(TS_E_NOMEM, "out of memory describing host %s", h->name);
    return TS_OK;
}

static int alloc_gpus(ts_host *h, int gpus, bool with_peer) {
    h->n_gpus = gpus;
    if (gpus == 0) return TS_OK;
    h->gpus = calloc((size_t)gpus, sizeof *h->gpus);
    if (with_peer) h->peer = calloc((size_t)gpus * (size_t)gpus, 1);
    if (!h->gpus || (with_peer && !h->peer))
        return ts_error_set(TS_E_NOMEM, "out of memory describing host %s", h->name);
    return TS_OK;
}

/* Cores, PUs and NUMA nodes of what this process may run on. */
static int discover_cpus(ts_host *h) {
    hwloc_topology_t topo;
    if (hwloc_topology_init(&topo) != 0 || hwloc_topology_load(topo) != 0)
        return ts_error_set(TS_E_INTERNAL, "hwloc could not read this machine's topology");
    int rc = TS_OK;
    int cores = hwloc_get_nbobjs_by_type(topo, HWLOC_OBJ_CORE);
    int pus = hwloc_get_nbobjs_by_type(topo, HWLOC_OBJ_PU);
    int numa = hwloc_get_nbobjs_by_type(topo, HWLOC_OBJ_NUMANODE);
    bool pu_as_core = cores <= 0; /* some VMs report PUs without cores */
    if (pu_as_core) cores = pus;
    if (cores <= 0 || pus <= 0) {
        rc = ts_error_set(TS_E_INTERNAL, "hwloc found no processing units");
        goto done;
    }
    if (numa <= 0) numa = 1;
    if ((rc = alloc_cores(h, cores, pus))) goto done;
    h->n_cores = cores;
    h->n_numa = numa;
    int k = 0;
    for (int c = 0; c < cores; c++) {
        hwloc_obj_t core =
            hwloc_get_obj_by_type(topo, pu_as_core ? HWLOC_OBJ_PU : HWLOC_OBJ_CORE, (unsigned)c);
        h->core_pu_begin[c] = k;
        int pu;
        hwloc_bitmap_foreach_begin(pu, core->cpuset) {
            if (k < pus) h->pus[k++] = pu;
        }
        hwloc_bitmap_foreach_end();
        h->core_numa[c] = 0;
        for (int n = 0; n < hwloc_get_nbobjs_by_type(topo, HWLOC_OBJ_NUMANODE); n++) {
            hwloc_obj_t node = hwloc_get_obj_by_type(topo, HWLOC_OBJ_NUMANODE, (unsigned)n);
            if (node->cpuset && hwloc_bitmap_intersects(node->cpuset, core->cpuset)) {
                h->core_numa[c] = n;
                break;
            }
        }
    }
    h->core_pu_begin[cores] = k;
    h->n_pus = k;
done:
    hwloc_topology_destroy(topo);
    return rc;
}

static int discover_gpus(ts_host *h) {
#ifdef TESSERA_HAVE_CUDA
    int count = 0;
    cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess) {
        snprintf(h->gpu_note, sizeof h->gpu_note, "no CUDA devices: %s", cudaGetErrorString(err));
        return TS_OK;
    }
    if (count > TS_HOST_MAX_GPUS) count = TS_HOST_MAX_GPUS;
    int rc = alloc_gpus(h, count, true);
    if (rc) return rc;
    for (int i = 0; i < count; i++) {
        struct cudaDeviceProp prop;
        h->gpus[i].pci_bus = -1;
        if (cudaGetDeviceProperties(&prop, i) == cudaSuccess) {
            snprintf(h->gpus[i].name, sizeof h->gpus[i].name, "%s", prop.name);
            h->gpus[i].memory_bytes = prop.totalGlobalMem;
            h->gpus[i].pci_bus = prop.pciBusID;
        }
        for (int j = 0; j < count; j++) {
            int can = i == j;
            if (i != j && cudaDeviceCanAccessPeer(&can, i, j) != cudaSuccess) can = 0;
            h->peer[i * count + j] = (unsigned char)(can != 0);
        }
    }
    if (count == 0) snprintf(h->gpu_note, sizeof h->gpu_note, "no CUDA devices visible");
#else
    snprintf(h->gpu_note, sizeof h->gpu_note, "built without CUDA");
#endif
    return TS_OK;
}

int ts_host_discover(ts_host *out) {
    memset(out, 0, sizeof *out);
    if (gethostname(out->name, sizeof out->name - 1) != 0)
        snprintf(out->name, sizeof out->name, "localhost");
    out->measured = true;
    int rc = discover_cpus(out);
    if (!rc) rc = discover_gpus(out);
    if (rc) ts_host_free(out);
    return rc;
}

int ts_host_declare(ts_host *out, const char *name, int cores, int numa, int gpus, bool all_peer) {
    memset(out, 0, sizeof *out);
    if (cores < 1 || cores > 1 << 20)
        return ts_error_set(TS_E_INVALID, "host %s: %d cores (need at least 1)", name, cores);
    if (numa < 1 || numa > cores)
        return ts_error_set(TS_E_INVALID, "host %s: %d NUMA nodes for %d cores", name, numa, cores);
    if (gpus < 0 || gpus > TS_HOST_MAX_GPUS)
        return ts_error_set(TS_E_INVALID, "host %s: %d GPUs (0 to %d)", name, gpus,
                            TS_HOST_MAX_GPUS);
    snprintf(out->name, sizeof out->name, "%s", name);
    int rc = alloc_cores(out, cores, cores);
    if (!rc) rc = alloc_gpus(out, gpus, all_peer);
    if (rc) {
        ts_host_free(out);
        return rc;
    }
    out->n_cores = out->n_pus = cores;
    out->n_numa = numa;
    for (int c = 0; c < cores; c++) {
        out->core_pu_begin[c] = c;
        out->pus[c] = c;
        out->core_numa[c] = (int)((long long)c * numa / cores);
    }
    out->core_pu_begin[cores] = cores;
    for (int i = 0; i < gpus; i++)
        out->gpus[i].pci_bus = -1;
    if (out->peer) memset(out->peer, 1, (size_t)gpus * (size_t)gpus);
    return TS_OK;
}

static void *dup_array(const void *src, size_t bytes, int *rc) {
    if (!src || bytes == 0) return NULL;
    void *p = malloc(bytes);
    if (!p)
        *rc = ts_error_set(TS_E_NOMEM, "out of memory copying a host");
    else
        memcpy(p, src, bytes);
    return p;
}

int ts_host_copy(ts_host *out, const ts_host *src) {
    *out = *src;
    int rc = TS_OK;
    out->core_numa = dup_array(src->core_numa, (size_t)src->n_cores * sizeof(int), &rc);
    out->core_pu_begin =
        dup_array(src->core_pu_begin, ((size_t)src->n_cores + 1) * sizeof(int), &rc);
    out->pus = dup_array(src->pus, (size_t)src->n_pus * sizeof(int), &rc);
    out->gpus = dup_array(src->gpus, (size_t)src->n_gpus * sizeof(ts_gpu), &rc);
    out->peer = dup_array(src->peer, (size_t)src->n_gpus * (size_t)src->n_gpus, &rc);
    if (rc) ts_host_free(out);
    return rc;
}

void ts_host_cpu_list(const ts_host *h, int core0, int n, char *out, size_t size) {
    size_t len = 0;
    out[0] = '\0';
    if (core0 < 0 || n <= 0 || core0 + n > h->n_cores) return;
    int begin = h->core_pu_begin[core0], end = h->core_pu_begin[core0 + n];
    /* PU indices are listed in core order; sort a copy so that runs collapse into ranges. */
    int *ids = malloc((size_t)(end - begin) * sizeof *ids);
    if (!ids) return;
    int m = 0;
    for (int i = begin; i < end; i++) {
        int v = h->pus[i], j = m++;
        while (j > 0 && ids[j - 1] > v) {
            ids[j] = ids[j - 1];
            j--;
        }
        ids[j] = v;
    }
    for (int i = 0; i < m && len + 1 < size;) {
        int j = i;
        while (j + 1 < m && ids[j + 1] == ids[j] + 1)
            j++;
        int w = j > i ? snprintf(out + len, size - len, "%s%d-%d", len ? "," : "", ids[i], ids[j])
                      : snprintf(out + len, size - len, "%s%d", len ? "," : "", ids[i]);
        if (w < 0 || (size_t)w >= size - len) {
            out[len] = '\0';
            break;
        }
        len += (size_t)w;
        i = j + 1;
    }
    free(ids);
}

void ts_host_free(ts_host *h) {
    if (!h) return;
    free(h->core_numa);
    free(h->core_pu_begin);
    free(h->pus);
    free(h->gpus);
    free(h->peer);
    h->core_numa = h->core_pu_begin = h->pus = NULL;
    h->gpus = NULL;
    h->peer = NULL;
    h->n_cores = h->n_pus = h->n_gpus = 0;
}
