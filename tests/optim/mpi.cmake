# Multi-rank tests of optim/ (included by tests/CMakeLists.txt).
loom_mpi_test(optim/mpi_sharded optim/mpi_sharded_optimizer.cpp 2 4)
