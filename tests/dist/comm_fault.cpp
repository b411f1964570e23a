// Fault injection for the communication layer: rank 1 stops answering and rank 0 must report
// it within the timeout instead of hanging. Usage: comm_fault checked|unchecked
#include <chrono>
#include <cstdio>
#include <cstring>
#include <thread>

#include "comm/launcher.h"
#include "tensor/error.h"

int main(int argc, char** argv) {
  using namespace parallama;
  const bool checked = argc > 1 && std::strcmp(argv[1], "checked") == 0;
  comm::Group g = comm::world({checked, 2.0});
  if (g.size() < 2) return 2;
  float x = 1.0f;
  g.all_reduce(&x, 1);  // everyone is here
  if (g.rank() == 1) {
    std::this_thread::sleep_for(std::chrono::seconds(60));  // stuck: never joins the next one
    return 0;
  }
  try {
    g.all_reduce(&x, 1);
  } catch (const Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    comm::abort_job(7);
  }
  return 0;
}
