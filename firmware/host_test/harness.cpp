// Runs sorter.ino on the host. stdin script, one command per line:
//   T <ms>   advance the clock to <ms> since the case started, calling loop() every millisecond
//   J <ms>   jump the clock to <ms> since the case started, then call loop() once (long idle stretches)
//   S <line> the host sends <line>
//   R        reset that keeps RAM (DTR/watchdog): setup() again, millis() restarts, the journal survives
//   P        power loss: RAM is lost (the journal is scrambled), then as R
//   E <n>    the belt encoder has counted <n> pulses
// After the boot and after every command it prints the MCU's lines, then a line "--".
#include "Arduino.h"
#include <iostream>

unsigned long g_abs_ms = 0, g_boot_ms = 0;
std::string g_rx, g_tx;
HostSerial Serial;
static unsigned long g_seed = 1;
void randomSeed(unsigned long s) { g_seed = s ? s : 1; }
long random(long lo, long hi) {
  g_seed = g_seed * 1103515245UL + 12345UL;
  return lo + (long)((g_seed >> 8) % (unsigned long)(hi - lo));
}

#include "../sorter/sorter.ino"

static void flush_tx() {
  std::cout << g_tx << "--" << std::endl;
  g_tx.clear();
}

int main() {
  setup();
  loop();
  flush_tx();
  std::string cmd;
  while (std::getline(std::cin, cmd)) {
    if (cmd.empty()) continue;
    char k = cmd[0];
    std::string arg = cmd.size() > 2 ? cmd.substr(2) : "";
    if (k == 'T') {
      unsigned long target = std::stoul(arg);
      while (g_abs_ms < target) {
        g_abs_ms++;
        loop();
      }
    } else if (k == 'J') {
      g_abs_ms = std::stoul(arg);
      loop();
    } else if (k == 'S') {
      g_rx += arg + "\n";
      loop();
    } else if (k == 'R' || k == 'P') {
      if (k == 'P') memset((void *)&journal, 0xA5, sizeof(journal));
      g_boot_ms = g_abs_ms;
      g_rx.clear();
      setup();
      loop();
    } else if (k == 'E') {
      encoderCount = std::stol(arg);
      loop();
    }
    flush_tx();
  }
  return 0;
}
