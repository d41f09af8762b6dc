# topology/: hostlists, the Slurm environment, cluster files, discovery and placement (unit), and
# `tessera topology` run as a user would, with a Slurm environment set by the test.
ts_add_test(NAME test_topology SOURCES unit/test_topology.c LIBS ts_topology LABELS unit)
if(TARGET tessera)
  ts_add_script_test(NAME topology_cli_plans_and_refusals
                     SCRIPT topology/test_topology_cli.py ARGS $<TARGET_FILE:tessera>
                     LABELS unit TIMEOUT 120)
endif()
