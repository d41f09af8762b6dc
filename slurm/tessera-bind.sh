#!/bin/sh
# tessera-bind.sh BINDINGS COMMAND... — runs in every task of a node pool (srun or mpirun starts
# it) and starts COMMAND with this rank's device (--device) and, with TESSERA_PIN=1, pinned to its
# cores. BINDINGS is the pool's plan as `tessera topology --plan P --pool K --bindings` printed it
# in the batch script ("HOST/DEVICE/CPUS;..." in rank order), so every task follows one plan.
bindings=$1
shift
rank=${OMPI_COMM_WORLD_RANK:-${PMIX_RANK:-${SLURM_PROCID:-0}}}
me=${SLURMD_NODENAME:-$(hostname -s)}
case "${CUDA_VISIBLE_DEVICES:-,}" in
    *,*) ;;
    *) # Slurm bound one GPU to this task (--gpus-per-task, --gpu-bind): it is cuda:0 here.
       echo "tessera-bind: rank $rank on $me: the GPU Slurm bound to it" >&2
       exec "$@" --device cuda:0 ;;
esac
entry=$(echo "$bindings" | cut -d';' -f$((rank + 1)))
[ -n "$entry" ] || { echo "tessera-bind: rank $rank is not in the plan ($bindings)" >&2; exit 2; }
host=${entry%%/*} rest=${entry#*/}
device=${rest%%/*} cpus=${rest#*/}
[ "$host" = "$me" ] || echo "tessera-bind: rank $rank runs on $me but the plan put it on $host: its device and cores may be wrong" >&2
pinned=""
[ "${TESSERA_PIN:-0}" = 1 ] && [ -n "$cpus" ] && pinned=" (pinned)"
echo "tessera-bind: rank $rank on $me: $device, cores $cpus$pinned" >&2
[ -n "$pinned" ] && exec taskset -c "$cpus" "$@" --device "$device"
exec "$@" --device "$device"
