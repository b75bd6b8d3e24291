# Multi-rank tests of the expert-parallel MoE layer (included by tests/CMakeLists.txt).
loom_mpi_test(moe/mpi_expert_parallel moe/mpi_expert_parallel.cpp 2 4)
loom_mpi_test(moe/mpi_dit_expert_parallel moe/mpi_dit_expert_parallel.cpp 2 4)
