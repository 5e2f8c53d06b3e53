# Topology (label topo): placement over committed XML files (unit), real
# binding read back from /proc of every rank (mpirun), the moerun topo CLI.
set_tests_properties(test-topology PROPERTIES LABELS "unit;topo")

add_executable(test-binding ${CMAKE_CURRENT_SOURCE_DIR}/mpi/test-binding.c ${CMAKE_CURRENT_SOURCE_DIR}/unit/harness.c)
mr_target_defaults(test-binding)
target_include_directories(test-binding PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/unit)
target_link_libraries(test-binding PRIVATE mr_runtime mr_topology)
# This machine: 2 ranks split its cores.
add_test(NAME binding-np2 COMMAND ${MR_MPIRUN} -np 2 $<TARGET_FILE:test-binding>)
# The 2-CPU "DGX" (tests/topology/dgx-h100-tiny.xml) as this machine: 8 ranks,
# one per GPU; GPUs 0-3 are local to CPU 0, GPUs 4-7 to CPU 1.
add_test(NAME binding-dgx-np8 COMMAND ${MR_MPIRUN} -np 8 $<TARGET_FILE:test-binding> "0;0;0;0;1;1;1;1")
set_tests_properties(binding-np2 binding-dgx-np8 PROPERTIES LABELS "mpi;topo" TIMEOUT 120 SKIP_RETURN_CODE 77)
set_tests_properties(binding-dgx-np8 PROPERTIES
  ENVIRONMENT "HWLOC_XMLFILE=${CMAKE_CURRENT_SOURCE_DIR}/topology/dgx-h100-tiny.xml;HWLOC_THISSYSTEM=1")
add_test(NAME topo-cli COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/topology/cli.sh $<TARGET_FILE:moerun>)
set_tests_properties(topo-cli PROPERTIES LABELS "mpi;topo" TIMEOUT 300)
# A real 2-node job on network-namespace nodes (root; skipped elsewhere).
add_test(NAME topo-netns COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/topology/netns.sh $<TARGET_FILE:moerun>
         ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/llama)
set_tests_properties(topo-netns PROPERTIES LABELS "mpi;netns;topo" TIMEOUT 400 SKIP_RETURN_CODE 77)
