# bench/models: every benchmark shape's config.json must parse as our config
# parser reads it (bench-engine --config-only: no weights, no backend).
file(GLOB MR_BENCH_MODELS CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/bench/models/*/config.json)
foreach(cfg ${MR_BENCH_MODELS})
  get_filename_component(dir ${cfg} DIRECTORY)
  get_filename_component(name ${dir} NAME)
  add_test(NAME bench-config-${name} COMMAND bench-engine --config-only --model ${dir} --batches 1,64 --prompt 512)
  set_tests_properties(bench-config-${name} PROPERTIES LABELS unit TIMEOUT 60)
endforeach()
