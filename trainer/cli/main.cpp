// The `loom` command line.
#include <cstdio>

int main(int argc, char** argv) {
  std::puts("loom: no commands yet");
  return 0;
}
