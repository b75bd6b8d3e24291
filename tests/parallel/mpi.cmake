# Multi-rank tests of parallel/ (included by tests/CMakeLists.txt).
loom_mpi_test(parallel/mpi parallel/mpi_collectives.cpp 2 4)
# A rank that fails makes the whole job exit non-zero (instead of hanging) and says why.
add_executable(parallel_mpi_abort parallel/mpi_abort.cpp)
target_link_libraries(parallel_mpi_abort PRIVATE loom)
add_test(NAME parallel/mpi_abort COMMAND sh -c
         "out=$(${loom_mpirun_str} -np 2 $<TARGET_FILE:parallel_mpi_abort> 2>&1); rc=$?; echo \"$out\"; test $rc -ne 0 && echo \"$out\" | grep -q 'loom: rank 1: \\[broadcast\\] group world (mpi, rank 1 of 2'")
set_tests_properties(parallel/mpi_abort PROPERTIES TIMEOUT 60 PROCESSORS 2
                     ENVIRONMENT "LOOM_NUM_THREADS=1;OPENBLAS_NUM_THREADS=1")
