# Multi-rank tests of the trainer (included by tests/CMakeLists.txt): every parallel layout through
# the real CLI under mpirun, against one process (parallel_equivalence.sh), and data-parallel jobs
# that go wrong (dp_failures.sh). Each script says what it checks and ends with PASS or FAIL.
add_executable(trainer_compare_runs trainer/compare_runs.cpp)
target_link_libraries(trainer_compare_runs PRIVATE loom)

set(loom_dp_recipe ${CMAKE_CURRENT_SOURCE_DIR}/trainer/tiny_synthetic.toml)
set(loom_dp_env "LOOM_MPIRUN=${loom_mpirun_str};LOOM_NUM_THREADS=1;OPENBLAS_NUM_THREADS=1")
# scenario:ranks (the largest number of ranks the scenario starts at once).
foreach(scenario_np dp2:2 dp4:4 dp2_accum2:2 classifier_dp2:2 resume_dp2_dp4:4 tp2:2 tp2_seqpar:2
                    sp2:2 dp2_tp2:4 tp2_sp2:4 muon_dp2_tp2:4 zero1_adamw_dp2:2 zero1_muon_dp2_tp2:4
                    resume_dp2tp2_np1:4 resume_np1_dp2tp2:4 resume_zero1_dp2:2 ep2_dp2:2
                    ep2_dp4:4 ep4_dp4:4 muon_ep2_dp4:4 resume_ep2dp4_np1:4 resume_np1_ep2dp4:4)
  string(REPLACE ":" ";" pair ${scenario_np})
  list(GET pair 0 scenario)
  list(GET pair 1 np)
  add_test(NAME trainer/parallel_equivalence_${scenario}
           COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/trainer/parallel_equivalence.sh
                   $<TARGET_FILE:loom_cli> $<TARGET_FILE:trainer_compare_runs> ${loom_dp_recipe}
                   ${scenario})
  set_tests_properties(trainer/parallel_equivalence_${scenario} PROPERTIES
                       TIMEOUT 120 PROCESSORS ${np} ENVIRONMENT "${loom_dp_env}")
endforeach()
# The same scenarios on GPUs, one per rank, NCCL between them (label gpu; skipped where the
# machine has fewer GPUs than the scenario's ranks): f32, and bf16 autocast for dp2.
foreach(scenario_np dp2:2 dp2_accum2:2 tp2:2 tp2_seqpar:2 sp2:2 ep2_dp2:2 zero1_adamw_dp2:2
                    dp4:4 dp2_tp2:4 muon_dp2_tp2:4 zero1_muon_dp2_tp2:4 ep2_dp4:4
                    resume_dp2tp2_np1:4 dp2:2:bf16)
  string(REPLACE ":" ";" parts ${scenario_np})
  list(GET parts 0 scenario)
  list(GET parts 1 np)
  set(precision f32)
  list(LENGTH parts n_parts)
  if(n_parts EQUAL 3)
    list(GET parts 2 precision)
  endif()
  set(name trainer/gpu_parallel_equivalence_${scenario}_${precision})
  add_test(NAME ${name}
           COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/trainer/parallel_equivalence.sh
                   $<TARGET_FILE:loom_cli> $<TARGET_FILE:trainer_compare_runs> ${loom_dp_recipe}
                   ${scenario})
  set_tests_properties(${name} PROPERTIES
      TIMEOUT 300 PROCESSORS ${np} LABELS gpu SKIP_RETURN_CODE 77
      ENVIRONMENT "${loom_dp_env};LOOM_EQUIV_DEVICE=cuda;LOOM_EQUIV_PRECISION=${precision};LOOM_EQUIV_RANKS=${np};NCCL_NVLS_ENABLE=0")
endforeach()
foreach(case bad_grid mismatch killed_rank)
  add_test(NAME trainer/dp_failures_${case}
           COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/trainer/dp_failures.sh $<TARGET_FILE:loom_cli>
                   ${loom_dp_recipe} ${case})
  set_tests_properties(trainer/dp_failures_${case} PROPERTIES
                       TIMEOUT 120 PROCESSORS 2 ENVIRONMENT "${loom_dp_env}")
endforeach()
