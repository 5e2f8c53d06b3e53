# Several nodes on one machine (label `netns`): scripts/netns-nodes.sh makes
# network-namespace nodes n1..nN; tests/cluster/netns-smoke.sh runs
# mpi-nodes on 2 nodes x 2 ranks over ob1/TCP and UCX; netns-generate.sh
# runs moerun generate there (tensor=2, pipeline=2) against one rank's
# tokens, on llama and qwen2_moe (expert=2). Skipped (77) where
# namespaces cannot be made (not root, no CAP_SYS_ADMIN, no iproute2).
# Not RUN_SERIAL: the script's lock (/run/moerun-netns.lock) keeps two
# namespace sessions apart, and other MPI jobs do not disturb it.
add_executable(mpi-nodes ${CMAKE_CURRENT_SOURCE_DIR}/cluster/mpi-nodes.c)
mr_target_defaults(mpi-nodes)
target_link_libraries(mpi-nodes PRIVATE MPI::MPI_C)
add_test(NAME netns-smoke COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/cluster/netns-smoke.sh $<TARGET_FILE:mpi-nodes>)
set_tests_properties(netns-smoke PROPERTIES LABELS "mpi;netns" SKIP_RETURN_CODE 77 TIMEOUT 400)
add_test(NAME netns-generate COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/cluster/netns-generate.sh
         $<TARGET_FILE:moerun> $<TARGET_FILE:compare-logits>
         ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/llama ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/qwen2_moe,expert=2)
# Worst case: 2 x 60 s references + 4 x 120 s mpirun timeouts; a run takes about 4 s.
set_tests_properties(netns-generate PROPERTIES LABELS "mpi;netns" SKIP_RETURN_CODE 77 TIMEOUT 600)
