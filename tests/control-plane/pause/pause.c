/*
 * The pod sandbox ("pause") container of the test node (tests/control-plane, `kcp up --node`):
 * holds the pod's namespaces, sleeps until SIGTERM or SIGINT, and reaps every child handed to
 * it (it is PID 1 of the pod when the pod shares its process namespace).
 *
 * Built static by tests/control-plane/kcp.sh (`gcc -static -O2`) and packed with image/oci.py
 * as the node's sandbox image (registry.k8s.io/pause:3.10, never pulled).
 */
#include <signal.h>
#include <stddef.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_term(int sig) {
  (void)sig;
  _exit(0);
}

static void on_chld(int sig) {
  (void)sig;
  while (waitpid(-1, NULL, WNOHANG) > 0) {
  }
}

int main(int argc, char **argv) {
  if (argc > 1 && argv[1][0] == '-' && argv[1][1] == 'v') {
    static const char v[] = "pause (kcp test node)\n";
    (void)!write(1, v, sizeof v - 1);
    return 0;
  }
  struct sigaction sa = {0};
  sigemptyset(&sa.sa_mask);
  sa.sa_handler = on_term;
  if (sigaction(SIGINT, &sa, NULL) < 0 || sigaction(SIGTERM, &sa, NULL) < 0) return 1;
  sa.sa_handler = on_chld;
  sa.sa_flags = SA_NOCLDSTOP | SA_RESTART;
  if (sigaction(SIGCHLD, &sa, NULL) < 0) return 2;
  for (;;) pause();
}
