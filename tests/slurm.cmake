# Slurm (issue 6): slurm/tessera.sbatch and slurm/tessera-disagg.sbatch submitted to a real Slurm
# started by the test on this machine (tests/slurm/local_slurm.sh: munge, slurmctld, two slurmd
# "nodes"), driven by a Python grpcio client; skipped (77) where slurmctld cannot start. And the
# multi-host test: coordinator and node groups in separate network namespaces (label integration).
if(TARGET tessera-coordinator AND TARGET tessera-node AND TARGET tessera AND TARGET ts_proto)
  get_target_property(TS_SLURM_PYDIR ts_proto TS_PYTHON_DIR)
  if(TS_SLURM_PYDIR)
    set(TS_SLURM_ARGS --bin-dir $<TARGET_FILE_DIR:tessera-coordinator> --pydir ${TS_SLURM_PYDIR})
    add_test(NAME slurm_sbatch_serves_and_scancel_stops
             COMMAND /usr/bin/python3 ${CMAKE_CURRENT_LIST_DIR}/slurm/test_slurm_sbatch.py
                     ${TS_SLURM_ARGS})
    add_test(NAME slurm_disagg_hetjob_prefill_decode_pools
             COMMAND /usr/bin/python3 ${CMAKE_CURRENT_LIST_DIR}/slurm/test_slurm_disagg.py
                     ${TS_SLURM_ARGS})
    # slurm/tessera-batch.sbatch: a JSONL file as one job, requeued mid-run and resumed.
    add_test(NAME slurm_batch_job_resumes_after_requeue
             COMMAND /usr/bin/python3 ${CMAKE_CURRENT_LIST_DIR}/slurm/test_slurm_batch.py
                     ${TS_SLURM_ARGS})
    set_tests_properties(slurm_sbatch_serves_and_scancel_stops
                         slurm_disagg_hetjob_prefill_decode_pools
                         slurm_batch_job_resumes_after_requeue
                         PROPERTIES LABELS slurm TIMEOUT 400 SKIP_RETURN_CODE 77)
  endif()
endif()
if(TARGET tessera-coordinator AND TARGET tessera-node AND TARGET ts_proto)
  get_target_property(TS_NETNS_PYDIR ts_proto TS_PYTHON_DIR)
  if(TS_NETNS_PYDIR)
    add_test(NAME multihost_netns_groups_and_cross_host_tp
             COMMAND /usr/bin/python3 ${CMAKE_CURRENT_LIST_DIR}/slurm/test_multihost_netns.py
                     --bin-dir $<TARGET_FILE_DIR:tessera-coordinator> --pydir ${TS_NETNS_PYDIR})
    set_tests_properties(multihost_netns_groups_and_cross_host_tp PROPERTIES
                         LABELS integration TIMEOUT 400 SKIP_RETURN_CODE 77)
  endif()
endif()
if(TS_SLURM_PYDIR)
  # tessera.sbatch on a local Slurm whose controller and nodes sit in separate network namespaces.
  add_test(NAME slurm_sbatch_across_network_namespaces
           COMMAND /usr/bin/python3 ${CMAKE_CURRENT_LIST_DIR}/slurm/test_slurm_netns.py
                   ${TS_SLURM_ARGS})
  set_tests_properties(slurm_sbatch_across_network_namespaces PROPERTIES
                       LABELS "slurm;integration" TIMEOUT 400 SKIP_RETURN_CODE 77)
endif()
