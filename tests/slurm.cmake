# The sbatch templates of slurm/ on a real local Slurm (label `slurm`):
# scripts/slurm-local.sh brings up munged, slurmctld and slurmd (Debian
# packages, installed by scripts/setup.sh) inside each test and always
# stops them; the test compares the jobs' outputs with a plain mpirun run.
# Skipped (77) without the packages, without root, or (slurm-two-nodes,
# label `netns` too) where network namespaces cannot be made; slurm-requeue
# also until moerun generate resumes its output.
# RESOURCE_LOCK keeps ctest from running two of them at once (the script's
# own lock, /run/moerun-slurm.lock, would make the second wait inside its
# TIMEOUT).
set(_mr_slurm_fixture ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/llama)
add_test(NAME slurm-one-node COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/slurm/one-node.sh $<TARGET_FILE:moerun> ${_mr_slurm_fixture})
add_test(NAME slurm-two-nodes COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/slurm/two-nodes.sh $<TARGET_FILE:moerun> ${_mr_slurm_fixture})
add_test(NAME slurm-requeue COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/slurm/requeue.sh $<TARGET_FILE:moerun> ${_mr_slurm_fixture})
set_tests_properties(slurm-one-node slurm-requeue PROPERTIES LABELS slurm)
set_tests_properties(slurm-two-nodes PROPERTIES LABELS "slurm;netns")
set_tests_properties(slurm-one-node slurm-two-nodes slurm-requeue PROPERTIES
  SKIP_RETURN_CODE 77 TIMEOUT 600 RESOURCE_LOCK moerun-slurm)
