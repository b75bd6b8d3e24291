# Multi-rank tests of the tensor/sequence parallel layers and DiT (included by tests/CMakeLists.txt).
loom_mpi_test(models/mpi_sequence_collectives models/mpi_sequence_collectives.cpp 2 4)
loom_mpi_test(models/mpi_tensor_parallel models/mpi_tensor_parallel.cpp 2 4)
